"""Whole-slide bags from the command line: a generated slide set, patient-grouped CV, heatmaps, GeoJSON, x/y."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import numpy as np
import pytest
from cli_helpers import run_cli

from lossattn import datasets as D
from lossattn.slides import validate_geojson


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides") / "set"
    from lossattn.cli import main

    assert main(["data", "make-slides", str(out), "--preset", "tiny", "--num-slides", "16"]) == 0
    return out


@pytest.fixture(scope="module")
def slide_run(tmp_path_factory, slides):
    from lossattn.cli import main

    out = tmp_path_factory.mktemp("slide_run")
    argv = ["train", "-d", str(slides), "--protocol", "fixed", "-m", "loss_attention", "--epochs", "2", "--lr", "1e-3"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    return out / "loss_attention" / "r0"


def test_make_slides_writes_the_clam_layout(slides):
    ds = D.load_feature_folder(slides)
    assert len(ds) == 16 and ds.has_coords and ds.groups is not None
    assert {p.suffix for p in (slides / "h5_files").iterdir()} == {".h5"}


def test_fixed_split_uses_the_manifest_validation_bags(slide_run, slides):
    record = json.loads((slide_run / "result.json").read_text())
    splits = [row["split"] for row in csv.DictReader(open(slides / "manifest.csv"))]
    assert (record["n_train"], record["n_val"], record["n_test"]) == tuple(
        splits.count(s) for s in ("train", "val", "test")
    )
    assert "test_patch_ap" in record and "test_froc" in record


def test_cv_keeps_a_case_in_one_fold(capsys, slides, tmp_path):
    code, _, err = run_cli(capsys, "cv", "-d", str(slides), "-m", "attention", "--epochs", "1", "--folds", "3",
                           "--repeats", "1", "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0, err
    manifest = {row["slide_id"]: row["case_id"] for row in csv.DictReader(open(slides / "manifest.csv"))}
    fold_of_case: dict[str, int] = {}
    for fold in range(3):
        preds = tmp_path / f"p{fold}"
        code, _, err = run_cli(capsys, "predict", str(tmp_path / "attention" / f"r0_f{fold}"), "--out", str(preds),
                               "--no-progress")  # fmt: skip
        assert code == 0, err
        for row in csv.DictReader(open(preds / "bags.csv")):
            case = manifest[row["bag"]]
            assert fold_of_case.setdefault(case, fold) == fold, f"case {case} in folds {fold_of_case[case]} and {fold}"
    assert len(fold_of_case) == len(set(manifest.values()))  # every case held out exactly once


def test_explain_draws_heatmaps_and_geojson_at_the_patch_coordinates(capsys, slide_run, slides, tmp_path):
    code, out, err = run_cli(capsys, "explain", str(slide_run), str(slides), "--split", "all", "--bag", "slide_0000",
                             "--out", str(tmp_path), "--no-progress")  # fmt: skip
    assert code == 0, err
    png, geo = tmp_path / "heatmap_slide_0000.png", tmp_path / "slide_0000.geojson"
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.std() > 0
    obj = json.loads(geo.read_text())
    ds = D.load_feature_folder(slides)
    coords = ds.coords(ds.names.index("slide_0000"))
    assert validate_geojson(obj) == len(coords)
    step = int(np.diff(np.unique(coords[:, 0])).min())
    corners = {tuple(f["geometry"]["coordinates"][0][0]) for f in obj["features"]}
    assert corners == {(int(x), int(y)) for x, y in coords}  # each polygon starts at its patch's corner
    ring = obj["features"][0]["geometry"]["coordinates"][0]
    x, y = ring[0]
    assert ring == [[x, y], [x + step, y], [x + step, y + step], [x, y + step], [x, y]]


def test_predict_writes_patch_coordinates(capsys, slide_run, tmp_path):
    code, _, err = run_cli(capsys, "predict", str(slide_run), "--out", str(tmp_path / "p"), "--no-progress")
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "p" / "instances.csv")))
    assert {"x", "y", "weight"} <= set(rows[0]) and all(r["x"].isdigit() and r["y"].isdigit() for r in rows)


def test_explain_unknown_slide_is_one_error_line(capsys, slide_run, slides, tmp_path):
    code, _, err = run_cli(capsys, "explain", str(slide_run), str(slides), "--bag", "nope", "--out", str(tmp_path))
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
