"""The five classic MIL benchmarks from the real files under $LOSSATTN_DATA (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from lossattn.datasets import Standardizer, load, stratified_kfold

pytestmark = pytest.mark.realdata

# name: (file, bags, positive bags, instances, features, min bag size, max bag size)
EXPECTED = {
    "musk1": ("musk1/musk1norm_matlab.mat", 92, 47, 476, 166, 2, 40),
    "musk2": ("musk2/musk2.csv.gz", 102, 39, 6598, 166, 1, 1044),
    "fox": ("fox/fox_100x100_matlab.mat", 200, 100, 1320, 230, 2, 13),
    "tiger": ("tiger/tiger_100x100_matlab.mat", 200, 100, 1220, 230, 1, 13),
    "elephant": ("elephant/elephant_100x100_matlab.mat", 200, 100, 1391, 230, 2, 13),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_exact_counts(name: str, real_root, require_real) -> None:
    file, bags, pos, inst, feats, smin, smax = EXPECTED[name]
    require_real(file)
    ds = load(name, root=real_root)
    assert len(ds) == bags
    assert ds.num_instances == inst
    assert ds.num_features == feats and ds.instance_shape == (feats,)
    assert ds.class_counts().tolist() == [bags - pos, pos]
    assert int(ds.bag_sizes.min()) == smin and int(ds.bag_sizes.max()) == smax
    assert len(set(ds.names)) == bags
    assert not ds.has_instance_labels
    x, _ = ds.to_flat()
    assert np.isfinite(x.numpy()).all()


def test_animals_positive_bags_first(real_root, require_real) -> None:
    require_real("fox/fox_100x100_matlab.mat")
    ds = load("fox", root=real_root)
    assert ds.labels[:100].tolist() == [1] * 100 and ds.labels[100:].tolist() == [0] * 100
    assert ds.names[:3] == ["1", "2", "3"]


def test_musk1_clean1_matches_normalised_mat(real_root, require_real) -> None:
    require_real("musk1/clean1.data")
    require_real("musk1/musk1norm_matlab.mat")
    raw = load("musk1", root=real_root, file="clean1.data")
    norm = load("musk1", root=real_root)
    assert raw.num_instances == 476 and len(raw) == 92 and raw.num_features == 166
    assert raw.bag_sizes.tolist() == norm.bag_sizes.tolist()
    assert raw.labels.tolist() == norm.labels.tolist()
    x_raw = raw.to_flat()[0].double().numpy()
    x_norm = norm.to_flat()[0].double().numpy()
    z = (x_raw - x_raw.mean(0)) / x_raw.std(0, ddof=1)
    assert np.abs(z - x_norm).max() < 1e-4
    # after the pipeline's train-only standardisation both files give the same features
    tr = stratified_kfold(raw.labels, 10, 0)[0][0]
    a = Standardizer().fit(raw.subset(tr)).transform(raw)
    b = Standardizer().fit(norm.subset(tr)).transform(norm)
    assert np.abs(a.to_flat()[0].numpy() - b.to_flat()[0].numpy()).max() < 1e-3
