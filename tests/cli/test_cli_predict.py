"""predict and explain: CSV tables with one row per bag / instance, real PNGs of the expected size."""

from __future__ import annotations

import csv

import matplotlib.image as mpimg
import numpy as np
from cli_helpers import run_cli

from lossattn.plots import image_bags_size


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_image_bags(capsys, digits_run, tmp_path):
    code, out, _ = run_cli(capsys, "predict", str(digits_run), "digits-bags-multi", "--num-bags", "9",
                           "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0 and "bags.csv" in out
    bags = read_csv(tmp_path / "bags.csv")
    inst = read_csv(tmp_path / "instances.csv")
    assert len(bags) == 9
    assert list(bags[0]) == ["bag", "n_instances", "label", "predicted", "predicted_name"] + [
        f"prob_{k}" for k in range(4)
    ]
    sizes = {b["bag"]: int(b["n_instances"]) for b in bags}
    assert len(inst) == sum(sizes.values())
    for b in bags:
        probs = [float(b[f"prob_{k}"]) for k in range(4)]
        assert abs(sum(probs) - 1) < 1e-4 and int(b["predicted"]) == int(np.argmax(probs))
        rows = [r for r in inst if r["bag"] == b["bag"]]
        assert [int(r["instance"]) for r in rows] == list(range(sizes[b["bag"]]))
        assert abs(sum(float(r["weight"]) for r in rows) - 1) < 1e-4  # attention sums to 1 within a bag
    # loss attention classifies instances too: instance predictions and probabilities are there
    assert {"predicted", "prob_0", "instance_label"} <= set(inst[0])


def test_predict_feature_table_with_standardiser(capsys, table_run, table_file, tmp_path):
    path, sizes = table_file
    # the run's own data: by default its held-out fold, and the output says so
    code, out, _ = run_cli(capsys, "predict", str(table_run / "best.pt"), str(path), "--out", str(tmp_path / "held"),
                           "--no-progress")  # fmt: skip
    assert code == 0 and "held-out (test) bags of the run" in out
    assert len(read_csv(tmp_path / "held" / "bags.csv")) == len(sizes) // 2
    code, _, _ = run_cli(capsys, "predict", str(table_run / "best.pt"), str(path), "--out", str(tmp_path / "all"),
                         "--split", "all", "--no-progress")  # fmt: skip
    assert code == 0
    bags = read_csv(tmp_path / "all" / "bags.csv")
    inst = read_csv(tmp_path / "all" / "instances.csv")
    assert len(bags) == len(sizes) and len(inst) == sum(sizes)
    assert [int(b["n_instances"]) for b in bags] == sizes
    assert [b["label"] for b in bags] == [str(i % 2) for i in range(len(sizes))]
    # attention has weights but no instance classifier
    assert "prob_0" not in inst[0] and inst[0]["weight"] != ""
    assert {r["instance_label"] for r in inst} == {"0", "1"}


def test_explain_image_bags_draws_tiles(capsys, digits_run, tmp_path):
    code, out, _ = run_cli(capsys, "explain", str(digits_run), "digits-bags-multi", "--num-bags", "6", "--bags", "2",
                           "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0
    pictures = sorted(tmp_path.glob("bag_*.png"))
    assert len(pictures) == 2 and (tmp_path / "bags.png").is_file()
    widths = []
    for p in pictures:
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[2] in (3, 4) and img.std() > 0
        w, h = img.shape[1], img.shape[0]
        widths.append(w)
        assert (w, h) in {image_bags_size(1, n) for n in range(1, 40)}
    overview = mpimg.imread(tmp_path / "bags.png")
    assert overview.shape[:2] == (image_bags_size(2, 1)[1], max(widths))


def test_explain_feature_bags_draws_ranked_bars(capsys, table_run, table_file, tmp_path):
    path, _ = table_file
    code, out, _ = run_cli(capsys, "explain", str(table_run), str(path), "--bags", "3", "--select", "first",
                           "--split", "all", "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0 and "ranked bar charts" in out and "all 24 bags" in out
    pictures = sorted(tmp_path.glob("bag_*.png"))
    assert [p.name for p in pictures] == ["bag_bag00.png", "bag_bag01.png", "bag_bag02.png"]
    for p in pictures:
        img = mpimg.imread(p)
        assert img.shape[:2] == (400, 800) and img.std() > 0


def test_explain_models_without_weights(capsys, tmp_path):
    from cli_helpers import TINY_DIGITS

    from lossattn.cli import main

    assert main(["train", *TINY_DIGITS, "-m", "instance_max,embedding_max", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    # instance+max has instance predictions: they are drawn instead of weights
    code, out, _ = run_cli(capsys, "explain", str(tmp_path / "r" / "instance_max" / "r0"), "digits-bags-multi",
                           "--num-bags", "4", "--bags", "1", "--out", str(tmp_path / "e"), "--no-progress")  # fmt: skip
    assert code == 0 and len(list((tmp_path / "e").glob("bag_*.png"))) == 1
    # embedding+max has neither: a clear error
    code, _, err = run_cli(capsys, "explain", str(tmp_path / "r" / "embedding_max" / "r0"), "digits-bags-multi",
                           "--num-bags", "4", "--out", str(tmp_path / "e2"), "--no-progress")  # fmt: skip
    assert code == 2 and err.startswith("error: this model gives neither instance weights")
    # predict still works and leaves the weight column empty
    code, _, _ = run_cli(capsys, "predict", str(tmp_path / "r" / "embedding_max" / "r0"), "digits-bags-multi",
                         "--num-bags", "3", "--out", str(tmp_path / "p"), "--no-progress")  # fmt: skip
    assert code == 0
    inst = read_csv(tmp_path / "p" / "instances.csv")
    assert inst and all(r["weight"] == "" for r in inst) and "prob_0" not in inst[0]
