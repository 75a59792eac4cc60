"""scikit-learn estimators for bags given as lists of feature arrays.

``X`` is a sequence of bags — a Python list, a tuple, an object ndarray of 2-D arrays, or a 3-D numeric
array when all bags have the same size — bag ``i`` of shape ``(n_i, n_features)`` with ``n_i >= 1``; ``y``
holds one label per bag, of any type scikit-learn accepts (strings, ints, ...), mapped to ``0 … K-1``
through :attr:`classes_`. Example::

    from sklearn.model_selection import GridSearchCV, cross_val_score
    from lossattn.sklearn import LossAttentionMILClassifier

    clf = LossAttentionMILClassifier(lam=0.1, epochs=50, random_state=0).fit(bags, y)
    clf.predict(bags), clf.predict_proba(bags), clf.instance_weights(bags)
    cross_val_score(LossAttentionMILClassifier(epochs=20), bags, y, cv=5)
    GridSearchCV(LossAttentionMILClassifier(epochs=20), {"lam": [0.0, 0.1, 1.0]}, cv=3).fit(bags, y)

Training uses the project's :class:`~lossattn.engine.Trainer` (Adam, validation-based epoch selection when
``val_fraction > 0``: lowest validation error, then lowest validation loss; else the last epoch). Features
are standardised with statistics of the training instances (:class:`~lossattn.datasets.Standardizer`).
A fitted estimator stores its network as a CPU ``state_dict`` (``model_state_``); pickling keeps only that
and the network is rebuilt on first use after unpickling. ``random_state`` seeds the initialisation, the
batch order, dropout and the validation split, so two fits with the same integer give the same model (on
CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from lossattn import functional as LF
from lossattn.datasets import BagDataset, Standardizer, train_val_split
from lossattn.engine.config import TrainConfig
from lossattn.engine.loop import Trainer
from lossattn.engine.sources import BagSource
from lossattn.models.registry import create_model

__all__ = ["MILClassifierBase", "LossAttentionMILClassifier", "AttentionMILClassifier", "check_bags"]


def check_bags(bags: Any, n_features: int | None = None) -> list[np.ndarray]:
    """Validate a collection of bags and return it as a list of float32 arrays ``(n_i, n_features)``.

    Raises:
        ValueError: no bags, a bag that is not 2-D, an empty bag, NaN/inf values, inconsistent widths, or
            a width different from ``n_features``.
        TypeError: ``bags`` is a string, a mapping or not a sequence.
    """
    if isinstance(bags, (str, bytes, dict)) or not hasattr(bags, "__len__") or not hasattr(bags, "__getitem__"):
        raise TypeError(f"bags must be a sequence of 2-D arrays (n_instances, n_features), got {type(bags).__name__}")
    if isinstance(bags, np.ndarray) and bags.dtype != object and bags.ndim != 3:
        raise ValueError(
            f"a numeric array of bags must be 3-D (n_bags, n_instances, n_features), got shape {bags.shape}; "
            "pass bags of different sizes as a list of 2-D arrays"
        )
    if hasattr(bags, "iloc"):  # a pandas Series of arrays: positional access, whatever its index
        bags = [bags.iloc[i] for i in range(len(bags))]
    if len(bags) == 0:
        raise ValueError("got 0 bags; at least one bag is required")
    out: list[np.ndarray] = []
    width = n_features
    for i in range(len(bags)):
        b = bags[i]
        try:
            a = np.asarray(b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bag {i} cannot be converted to a numeric array: {exc}") from exc
        if a.ndim != 2:
            raise ValueError(
                f"bag {i} has shape {a.shape}; every bag must be a 2-D array (n_instances, n_features) "
                "(reshape a single-feature bag with .reshape(-1, 1))"
            )
        if a.shape[0] == 0:
            raise ValueError(f"bag {i} is empty (0 instances); every bag needs at least one instance")
        if a.shape[1] == 0:
            raise ValueError(f"bag {i} has 0 features")
        if not np.isfinite(a).all():
            raise ValueError(f"bag {i} contains NaN or infinite values")
        if width is None:
            width = a.shape[1]
        elif a.shape[1] != width:
            if n_features is not None:
                raise ValueError(
                    f"bag {i} has {a.shape[1]} features, but the estimator was fitted with {n_features} features"
                )
            raise ValueError(f"bag {i} has {a.shape[1]} features but bag 0 has {width} (inconsistent widths)")
        out.append(a.astype(np.float32))
    return out


class MILClassifierBase(ClassifierMixin, BaseEstimator):
    """Shared fit/predict logic; subclasses define ``__init__`` (parameters only) and :meth:`_model_spec`."""

    # ------------------------------------------------------------------ to implement
    def _model_spec(self) -> tuple[str, dict[str, Any]]:  # pragma: no cover - abstract
        """Registered model name and its keyword arguments (besides in_features / num_classes / extractor)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # X is a list of bags, not a 2-D design matrix
        tags.input_tags.three_d_array = True
        return tags

    def _extractor_args(self) -> dict[str, Any]:
        hidden = tuple(int(h) for h in (self.hidden or ()))
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden layer widths must be positive, got {self.hidden!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not hidden:
            return {"extractor": "identity"}
        return {"extractor": "mlp", "extractor_kwargs": {"hidden": list(hidden), "dropout": float(self.dropout)}}

    def _build_model(self):
        name, kwargs = self._model_spec()
        return create_model(
            name,
            in_features=self.n_features_in_,
            num_classes=max(2, len(self.classes_)),
            **self._extractor_args(),
            **kwargs,
        )

    def _train_config(self) -> TrainConfig:
        cfg = TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=float(self.lr),
            weight_decay=float(self.weight_decay),
            device=str(self.device),
            progress=bool(self.verbose),
        )
        cfg.validate()
        return cfg

    def _dataset(self, bags: list[np.ndarray], labels: np.ndarray | None = None) -> BagDataset:
        labels = np.zeros(len(bags), dtype=np.int64) if labels is None else labels
        ds = BagDataset(bags, labels, num_classes=max(2, len(self.classes_)), name="sklearn-bags")
        return self.scaler_.transform(ds) if self.scaler_ is not None else ds

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Train on bags ``X`` with labels ``y``.

        Args:
            X: sequence of ``B`` arrays ``(n_i, n_features)`` (a list, an object ndarray or a 3-D array).
            y: ``B`` bag labels (at least two distinct values).

        Returns:
            ``self``.
        """
        bags = check_bags(X)
        y = column_or_1d(y, warn=True)
        if len(y) != len(bags):
            raise ValueError(f"got {len(bags)} bags but {len(y)} labels")
        check_classification_targets(y)
        classes, y_enc = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"the training bags hold a single class ({classes[0]!r}); a classifier needs at least 2 classes"
            )
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        cfg = self._train_config()
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        self.classes_ = classes
        self.n_features_in_ = int(bags[0].shape[1])
        y_enc = y_enc.astype(np.int64)
        if self.val_fraction > 0:
            try:
                tr, va = train_val_split(y_enc, val_fraction=float(self.val_fraction), seed=seed)
            except ValueError as exc:
                raise ValueError(f"cannot carve a validation split (val_fraction={self.val_fraction}): {exc}") from exc
        else:
            tr, va = np.arange(len(bags)), np.zeros(0, dtype=np.int64)
        raw = BagDataset(bags, y_enc, num_classes=max(2, len(classes)), name="sklearn-bags")
        train = raw.subset(tr)
        self.scaler_ = Standardizer().fit(train) if self.standardize else None
        if self.scaler_ is not None:
            train = self.scaler_.transform(train)
        val = None
        if va.size:
            val = raw.subset(va)
            val = self.scaler_.transform(val) if self.scaler_ is not None else val
        with torch.random.fork_rng(devices=[]):  # leave the caller's global torch RNG untouched
            torch.manual_seed(seed)
            model = self._build_model()
            result = Trainer(model, cfg, seed=seed).fit(train, val)
        model.to("cpu").eval()
        self.model_state_ = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self.selected_epoch_ = int(result.selected_epoch)
        self.history_ = result.history
        self.n_iter_ = int(cfg.epochs)
        self._model = model
        return self

    # ------------------------------------------------------------------ model access and pickling
    def _fitted_model(self):
        check_is_fitted(self, ["classes_", "model_state_"])
        model = self.__dict__.get("_model")
        if model is None:
            model = self._build_model()
            model.load_state_dict(self.model_state_)
            model.eval()
            self._model = model
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            device = torch.device("cpu")
        return model.to(device), device

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_model", None)  # the state_dict in model_state_ is enough; rebuilt on first use
        return state

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _forward(self, X, need_instances: bool = False):
        model, device = self._fitted_model()
        bags = check_bags(X, self.n_features_in_)
        ds = self._dataset(bags)
        n = len(ds)
        logits = np.zeros((n, model.num_classes if model.head == "softmax" else 1), dtype=np.float64)
        probs = np.zeros((n, model.num_classes), dtype=np.float64)
        weights: list[np.ndarray | None] = [None] * n
        inst: list[np.ndarray | None] = [None] * n
        with LF.input_checks(False):
            for batch in BagSource(ds).eval_batches(64):
                batch = batch.to(device)
                out = model(batch.x, batch.mask)
                lg = out.bag_logits.double().cpu().numpy()
                pr = out.probabilities().double().cpu().numpy()
                w = None if out.weights is None else out.weights.double().cpu().numpy()
                ip = out.instance_probabilities() if need_instances else None
                ip = None if ip is None else ip.double().cpu().numpy()
                mask = batch.mask.cpu().numpy()
                for j, idx in enumerate(batch.index.tolist()):
                    logits[idx], probs[idx] = lg[j], pr[j]
                    if w is not None:
                        weights[idx] = w[j][mask[j]]
                    if ip is not None:
                        inst[idx] = ip[j][mask[j]]
        return logits, probs, weights, inst

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(B, n_classes)``, columns in the order of :attr:`classes_`."""
        return self._forward(X)[1]

    def decision_function(self, X) -> np.ndarray:
        """Bag scores: ``(B,)`` log-odds of ``classes_[1]`` for two classes, else ``(B, n_classes)`` logits."""
        logits = self._forward(X)[0]
        if len(self.classes_) == 2:
            return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits[:, 0]
        return logits

    def predict(self, X) -> np.ndarray:
        """Predicted labels ``(B,)`` (values of :attr:`classes_`)."""
        proba = self.predict_proba(X)  # checks fitted first
        return self.classes_[proba.argmax(axis=1)]

    def instance_weights(self, X) -> list[np.ndarray]:
        """Per bag, the instance weights ``α`` ``(n_i,)`` (each bag's weights sum to 1)."""
        return [np.asarray(w) for w in self._forward(X)[2]]


class LossAttentionMILClassifier(MILClassifierBase):
    """Loss-based attention MIL classifier (Shi et al., AAAI 2020) for lists of feature arrays.

    Args:
        hidden: widths of the instance MLP (``fc-ReLU-dropout`` per layer); ``()`` uses the raw features.
        lam: λ, weight of the fused instance loss.
        reduction: ``"mean"`` (released code, λ/n_i) or ``"sum"`` (paper's Eq. 7) over a bag's instances.
        epochs: training epochs.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: bags per optimisation step.
        dropout: dropout after every hidden layer.
        val_fraction: share of the training bags (stratified) held out to select the epoch; 0 = no
            selection (the last epoch is kept).
        standardize: standardise features with the training instances' mean and std.
        random_state: None, an int or a ``numpy.random.RandomState``.
        device: ``"cpu"`` or ``"cuda"``.
        verbose: show a progress bar while training.

    Attributes:
        classes_: the class labels, sorted.
        n_features_in_: features per instance.
        model_state_: the trained network's ``state_dict`` (CPU tensors).
        scaler_: the fitted :class:`~lossattn.datasets.Standardizer` (None without standardisation).
        selected_epoch_: the epoch kept; ``history_``: per-epoch training/validation metrics; ``n_iter_``.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (64,),
        lam: float = 0.1,
        reduction: str = "mean",
        epochs: int = 50,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 1,
        dropout: float = 0.0,
        val_fraction: float = 0.0,
        standardize: bool = True,
        random_state: Any = None,
        device: str = "cpu",
        verbose: int = 0,
    ) -> None:
        self.hidden = hidden
        self.lam = lam
        self.reduction = reduction
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.dropout = dropout
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _model_spec(self) -> tuple[str, dict[str, Any]]:
        return "loss_attention", {"lam": float(self.lam), "reduction": self.reduction}

    def predict_instance_proba(self, X) -> list[np.ndarray]:
        """Per bag, class probabilities of every instance under the shared classifier ``(n_i, n_classes)``."""
        return [np.asarray(p) for p in self._forward(X, need_instances=True)[3]]


class AttentionMILClassifier(MILClassifierBase):
    """Attention / gated-attention MIL classifier (Ilse et al. 2018) with a softmax head.

    Args:
        hidden: widths of the instance MLP; ``()`` uses the raw features.
        attention_hidden: width of the attention network.
        gated: gated attention.
        epochs, lr, weight_decay, batch_size, dropout, val_fraction, standardize, random_state, device,
            verbose: as for :class:`LossAttentionMILClassifier`.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (64,),
        attention_hidden: int = 64,
        gated: bool = False,
        epochs: int = 50,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 1,
        dropout: float = 0.0,
        val_fraction: float = 0.0,
        standardize: bool = True,
        random_state: Any = None,
        device: str = "cpu",
        verbose: int = 0,
    ) -> None:
        self.hidden = hidden
        self.attention_hidden = attention_hidden
        self.gated = gated
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.dropout = dropout
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def _model_spec(self) -> tuple[str, dict[str, Any]]:
        name = "gated_attention" if self.gated else "attention"
        return name, {"hidden": int(self.attention_hidden), "head": "softmax"}
