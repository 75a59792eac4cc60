"""evaluate / predict / explain on image-classification checkpoints (ResNet18-MIL: feature-map positions)."""

from __future__ import annotations

import csv

import matplotlib.image as mpimg
import numpy as np
import pytest
from cli_helpers import run_cli
from PIL import Image

from lossattn.datasets.tinyimagenet import make_synthetic_tinyimagenet


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """``lossattn reproduce table5 --quick`` on a synthetic Tiny ImageNet tree: max and loss_attention runs."""
    from lossattn.cli import main

    base = tmp_path_factory.mktemp("table5")
    top = make_synthetic_tinyimagenet(base / "data", num_classes=3, train_per_class=4, val_per_class=2)
    code = main(["reproduce", "table5", "--quick", "--data-dir", str(top), "--methods", "max,loss_attention",
                 "--epochs", "1", "--out", str(base / "t5"), "--no-progress"])  # fmt: skip
    assert code == 0
    runs = {m: next((base / "t5").glob(f"size_*/{m}/r0")) for m in ("max", "loss_attention")}
    assert all((r / "best.pt").is_file() for r in runs.values())
    return runs, top


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_explain_draws_the_weight_map_over_each_image(capsys, tiny_runs, tmp_path):
    runs, top = tiny_runs
    code, out, _ = run_cli(capsys, "explain", str(runs["loss_attention"]), "--data-dir", str(top),
                           "--bags", "3", "--out", str(tmp_path))  # fmt: skip
    assert code == 0 and "3 Tiny ImageNet val (test) images" in out and "ground-truth box" in out
    pngs = sorted(tmp_path.glob("image_*.png"))
    assert len(pngs) == 3
    img = mpimg.imread(pngs[0])
    assert img.shape[:2] == (320, 600) and img.std() > 0.05  # a real picture of the plot's size


def test_explain_mean_or_max_pooling_uses_the_class_activation_map(capsys, tiny_runs, tmp_path):
    runs, top = tiny_runs
    code, out, _ = run_cli(capsys, "explain", str(runs["max"]), "--data-dir", str(top), "--bags", "2",
                           "--select", "random", "--out", str(tmp_path))  # fmt: skip
    assert code == 0 and "class activation map" in out and len(list(tmp_path.glob("*.png"))) == 2


def test_explain_and_predict_the_users_own_image_files(capsys, tiny_runs, tmp_path):
    runs, _ = tiny_runs
    folder = tmp_path / "mine"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k, size in enumerate([(64, 64), (40, 90), (100, 100)]):  # resized to the trained 64x64
        Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(folder / f"photo{k}.png")
    (folder / "notes.txt").write_text("not an image")
    code, out, _ = run_cli(capsys, "explain", str(runs["loss_attention"]), str(folder), "--out", str(tmp_path / "ex"))
    assert code == 0 and "3 image file(s)" in out and "resized to 64×64" in out
    assert len(list((tmp_path / "ex").glob("*.png"))) == 3
    code, out, _ = run_cli(capsys, "predict", str(runs["loss_attention"]), str(folder), "--out", str(tmp_path / "pr"))
    assert code == 0 and "Predicted 3 images" in out
    bags = read_csv(tmp_path / "pr" / "bags.csv")
    inst = read_csv(tmp_path / "pr" / "instances.csv")
    assert len(bags) == 3 and all(b["label"] == "" for b in bags)
    positions = int(bags[0]["n_instances"])
    assert positions == 64 and len(inst) == 3 * positions  # 64x64 input, total stride 8: an 8x8 feature map
    for b in bags:
        weights = [float(r["weight"]) for r in inst if r["bag"] == b["bag"]]
        assert abs(sum(weights) - 1) < 1e-4


def test_evaluate_reports_accuracy_top5_and_localization_ap(capsys, tiny_runs, tmp_path):
    import json

    runs, top = tiny_runs
    code, out, _ = run_cli(capsys, "evaluate", str(runs["loss_attention"]), "--data-dir", str(top),
                           "--out", str(tmp_path))  # fmt: skip
    assert code == 0 and "localization_ap" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 6 and metrics["top5"] == 1.0  # three classes: every label is in the top 5
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["localization_ap"] <= 1.0


def test_image_checkpoint_errors_are_one_line(capsys, tiny_runs, tmp_path):
    runs, top = tiny_runs
    code, _, err = run_cli(capsys, "explain", str(runs["max"]), "mnist-bags", "--data-dir", str(top))
    assert code == 2 and "unknown image data 'mnist-bags'" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "predict", str(runs["max"]), "--split", "all", "--data-dir", str(top))
    assert code == 2 and "--split all is not defined for image data" in err
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = run_cli(capsys, "explain", str(runs["max"]), str(bad))
    assert code == 2 and "cannot read image" in err and "broken.png" in err
