"""scikit-learn conventions of lossattn.sklearn estimators on tiny ragged bags (seconds)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score

from lossattn.sklearn import AttentionMILClassifier, LossAttentionMILClassifier

FAST = dict(epochs=8, batch_size=4, lr=1e-2, hidden=(16,))
ESTIMATORS = [LossAttentionMILClassifier, AttentionMILClassifier]


def make_bags(n_bags=30, dim=5, seed=0, classes=("neg", "pos")):
    """Ragged bags of 3–6 instances; a bag of class k > 0 holds one instance shifted along feature k − 1."""
    rng = np.random.default_rng(seed)
    bags, y = [], []
    for i in range(n_bags):
        n = int(rng.integers(3, 7))
        x = rng.normal(size=(n, dim))
        k = i % len(classes)
        if k:
            x[int(rng.integers(n)), k - 1] += 5.0
        bags.append(x)
        y.append(classes[k])
    return bags, np.array(y)


@pytest.fixture(scope="module")
def data():
    return make_bags()


@pytest.fixture(scope="module")
def fitted(data):
    bags, y = data
    return LossAttentionMILClassifier(random_state=0, **FAST).fit(bags, y)


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_init_stores_params_and_clone(cls):
    est = cls(lr=0.5, random_state=3)
    params = est.get_params()
    assert params["lr"] == 0.5 and params["random_state"] == 3 and is_classifier(est)
    assert not [k for k in vars(est) if k.endswith("_")]  # nothing fitted in __init__
    est.set_params(epochs=2, dropout=0.1)
    assert est.epochs == 2 and est.dropout == 0.1
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_not_fitted_errors(cls, data):
    bags, _ = data
    est = cls()
    for method in ("predict", "predict_proba", "decision_function", "instance_weights"):
        with pytest.raises(NotFittedError):
            getattr(est, method)(bags)


def test_fitted_attributes_and_predictions(fitted, data):
    bags, y = data
    assert list(fitted.classes_) == ["neg", "pos"] and fitted.n_features_in_ == 5
    assert all(t.device.type == "cpu" for t in fitted.model_state_.values())
    assert len(fitted.history_) == 8 and fitted.selected_epoch_ == 7 and fitted.n_iter_ == 8
    assert fitted.score(bags, y) >= 0.9
    proba = fitted.predict_proba(bags)
    assert proba.shape == (30, 2) and np.allclose(proba.sum(1), 1.0)
    scores = fitted.decision_function(bags)
    assert scores.shape == (30,)
    assert np.array_equal(fitted.predict(bags), np.where(scores > 0, "pos", "neg"))
    weights = fitted.instance_weights(bags)
    assert [len(w) for w in weights] == [len(b) for b in bags]
    assert np.allclose([w.sum() for w in weights], 1.0)
    inst = fitted.predict_instance_proba(bags[:2])
    assert inst[0].shape == (len(bags[0]), 2)
    # a clone of a fitted estimator is unfitted
    with pytest.raises(NotFittedError):
        clone(fitted).predict(bags)


def test_pickle_round_trip(fitted, data):
    bags, _ = data
    blob = pickle.dumps(fitted)
    again = pickle.loads(blob)
    assert "_model" not in vars(again)  # only the state_dict travels; the network is rebuilt on use
    assert np.array_equal(again.predict_proba(bags), fitted.predict_proba(bags))
    assert np.array_equal(again.predict(bags), fitted.predict(bags))


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_deterministic_by_random_state_and_leaves_global_rng(cls, data):
    bags, y = data
    state = torch.get_rng_state()
    a = cls(random_state=7, dropout=0.2, **{**FAST, "epochs": 3}).fit(bags, y).predict_proba(bags)
    assert torch.equal(torch.get_rng_state(), state)
    b = cls(random_state=7, dropout=0.2, **{**FAST, "epochs": 3}).fit(bags, y).predict_proba(bags)
    c = cls(random_state=8, dropout=0.2, **{**FAST, "epochs": 3}).fit(bags, y).predict_proba(bags)
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_multiclass_object_array_and_3d_input():
    bags, y = make_bags(30, classes=("a", "b", "c"))
    est = AttentionMILClassifier(random_state=0, gated=True, **FAST).fit(np.array(bags, dtype=object), y)
    assert list(est.classes_) == ["a", "b", "c"] and est.decision_function(bags).shape == (30, 3)
    assert est.predict_proba(bags).shape == (30, 3)
    same = np.stack([b[:3] for b in bags])  # (30, 3, 5) numeric array of equal-size bags
    assert est.predict(same).shape == (30,)
    pd = pytest.importorskip("pandas")
    series = pd.Series(bags, index=np.arange(30)[::-1] + 100)  # positional access whatever the index
    assert np.array_equal(est.predict(series), est.predict(bags))
    ints = LossAttentionMILClassifier(random_state=0, hidden=(), epochs=2).fit(bags, np.arange(30) % 3 + 10)
    assert set(ints.predict(bags)) <= {10, 11, 12}


def test_validation_split_selects_an_epoch(data):
    bags, y = data
    est = LossAttentionMILClassifier(random_state=0, val_fraction=0.3, **FAST).fit(bags, y)
    assert "val_error" in est.history_[0] and 0 <= est.selected_epoch_ < 8


def test_input_errors(fitted, data):
    bags, y = data
    est = LossAttentionMILClassifier(epochs=1)
    with pytest.raises(ValueError, match="empty"):
        est.fit([np.zeros((0, 5))] + bags[1:], y)
    nan = [b.copy() for b in bags]
    nan[3][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(nan, y)
    with pytest.raises(ValueError, match="inconsistent"):
        est.fit(bags[:-1] + [np.zeros((2, 4))], y)
    with pytest.raises(ValueError, match="single class"):
        est.fit(bags, np.array(["pos"] * 30))
    with pytest.raises(ValueError, match="labels"):
        est.fit(bags, y[:-1])
    with pytest.raises(ValueError, match="2-D"):
        est.fit([np.zeros(5)] + bags[1:], y)
    with pytest.raises(ValueError, match="0 bags"):
        est.fit([], [])
    with pytest.raises(ValueError, match="fitted with 5 features"):
        fitted.predict([np.zeros((2, 4))])
    with pytest.raises(ValueError, match="val_fraction"):
        LossAttentionMILClassifier(val_fraction=1.5).fit(bags, y)


def test_cross_val_score_and_grid_search(data):
    bags, y = data
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(LossAttentionMILClassifier(random_state=0, **FAST), bags, y, cv=cv)
    assert scores.shape == (3,) and scores.mean() >= 0.7
    search = GridSearchCV(
        LossAttentionMILClassifier(random_state=0, **{**FAST, "epochs": 3}), {"lam": [0.0, 1.0]}, cv=cv
    ).fit(np.array(bags, dtype=object), y)
    assert search.best_params_["lam"] in (0.0, 1.0) and len(search.cv_results_["params"]) == 2
    assert search.predict(bags).shape == (30,)
