"""The benchmark and experiment scripts run end to end on tiny settings (real MUSK files; skipped without)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data(*names: str, needed_by: str) -> Path:
    """``$LOSSATTN_DATA`` when it holds the folders ``names``; else the test skips, saying why."""
    env = os.environ.get("LOSSATTN_DATA", "").strip()
    if not env or not Path(env).is_dir():
        pytest.skip(f"LOSSATTN_DATA is not set to a folder: {needed_by}")
    root = Path(env)
    for name in names:
        if not (root / name).is_dir():
            pytest.skip(f"real data missing: {root / name} ({needed_by})")
    return root


@pytest.fixture
def musk_root() -> Path:
    return real_data("musk1", "musk2", needed_by="these script checks need the MUSK files")


def run_script(*argv: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.realdata
def test_musk2_benchmark_smoke(musk_root, tmp_path):
    out = run_script(str(REPO / "benchmarks" / "musk2_mlp.py"), "--smoke", "--json", str(tmp_path / "r.json"), cwd=REPO)
    result = json.loads((tmp_path / "r.json").read_text())
    r = result["results"]
    assert result["settings"]["runs"] == 2 and "| ours: vectorized engine" in out
    for v in ("reference", "trainer", "vectorized"):
        assert r[f"{v}_train"]["bags_per_s"] > 0 and 0.0 <= r[f"{v}_test"]["accuracy"] <= 1.0


@pytest.fixture
def mnist_root() -> Path:
    return real_data("mnist", needed_by="the MNIST-bags benchmarks need the MNIST files")


@pytest.mark.realdata
def test_mnist_bags_benchmark_smoke(mnist_root, tmp_path):
    out = run_script(str(REPO / "benchmarks" / "mnist_bags.py"), "--smoke", "--batch-size", "1", "2", "--json",
                     str(tmp_path / "m.json"), cwd=REPO)  # fmt: skip
    summary = json.loads((tmp_path / "m.json").read_text())["summary"]
    assert set(summary) == {"reference", "ours_b1", "ours_b2"} and "kernel floor × ref" in out
    for v in ("ours_b1", "ours_b2"):
        assert summary[v]["train_speedup"] > 0 and summary[v]["kernel_floor_speedup"] > 0
        assert 0.0 <= summary[v]["accuracy_mean"] <= 1.0


@pytest.mark.realdata
def test_gpu_check_script_runs_on_cpu(mnist_root, tmp_path):
    # the script waits for a lent GPU; this keeps it from rotting in the meantime
    out = run_script(str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--smoke", "--json",
                     str(tmp_path / "g.json"), cwd=REPO)  # fmt: skip
    summary = json.loads((tmp_path / "g.json").read_text())
    assert set(summary["mnist_bags"]["summary"]) == {"reference", "ours_b1", "ours_b8"}
    assert summary["trainer_runs"] and "kernel floor" in out


@pytest.mark.realdata
def test_denormals_benchmark_smoke(mnist_root, tmp_path):
    args = ["--epochs", "1", "--train-bags", "8", "--json", str(tmp_path / "d.json")]
    out = run_script(str(REPO / "benchmarks" / "denormals.py"), *args, cwd=REPO)
    r = json.loads((tmp_path / "d.json").read_text())
    # two Adam moments per trained parameter (the released model's unused layer gets no state)
    assert 800_000 < r["denormal_adam_moments"]["of"] <= 2 * r["denormal_parameters"]["of"]
    assert set(r["next_epoch_seconds"]) == {"no_flush_0", "flush_1", "no_flush_2"} and r["slowdown_without_flush"] > 0
    assert "slowdown without flushing" in out


@pytest.mark.realdata
def test_table1_protocol_benchmark_smoke(musk_root, tmp_path):
    args = ["--datasets", "musk1", "--epochs", "1", "--repeats", "1", "--reference-runs", "1", "--loop-runs", "1"]
    out = run_script(str(REPO / "benchmarks" / "table1_protocol.py"), *args, "--jobs", "1", "--json",
                     str(tmp_path / "t.json"), cwd=REPO)  # fmt: skip
    result = json.loads((tmp_path / "t.json").read_text())
    d = result["datasets"][0]
    assert d["runs"] == 10 and {"vectorized", "reference", "authors_loop"} <= set(d)
    assert "authors'-structure reference loop" in out


@pytest.mark.realdata
def test_ablation_script_smoke(musk_root, tmp_path):
    args = ["--data-root", str(musk_root), "--datasets", "musk1", "--repeats", "1", "--folds", "2", "--epochs", "1"]
    out = run_script(str(REPO / "scripts" / "table1_ablation.py"), *args, "--out", str(tmp_path), cwd=tmp_path)
    runs = json.loads((tmp_path / "ablation.json").read_text())["runs"]
    methods = {r["method"] for r in runs}
    assert {"la", "att", "la_sum", "la_lam0", "la_raw", "att_noval", "la_lamval"} <= methods
    assert all(len([r for r in runs if r["method"] == m]) == 2 for m in methods)  # 2 folds each
    assert "| la_noval |" in out


def test_slides_benchmark_smoke(tmp_path):
    # generated data only: no real files needed
    args = ["--smoke", "--rounds", "1", "--epochs", "1", "--tmp", str(tmp_path), "--json", str(tmp_path / "s.json")]
    out = run_script(str(REPO / "benchmarks" / "slides.py"), *args, cwd=REPO)
    r = json.loads((tmp_path / "s.json").read_text())
    for kind in ("identity", "mlp"):
        v = r["extractors"][kind]["variants"]
        assert {"plain_la", "plain_la_nochecks", "plain_la_torch", "lossattn_la_w0", "plain_clam"} <= set(v)
        assert {"lossattn_gated", "floor"} <= set(v)
        assert all(x["instances_per_s"] > 0 for x in v.values())
        assert all(0.0 <= x["auc"] <= 1.0 for name, x in v.items() if name != "floor")
        assert r["extractors"][kind]["ratios"]["lossattn_la_w0 / floor"]["median"] > 0
    assert "torchmil" in r and "read floor" in out
    assert r["machine"]["date"][:2] == "20" and "slides.py --smoke" in r["machine"]["command"]  # when and how
    assert r["machine"]["command"] in out
    assert not list(tmp_path.glob("slides-*"))  # the generated slides were deleted


def test_slides_scaling_smoke(tmp_path):
    args = ["--scaling", "--smoke", "--tmp", str(tmp_path), "--json", str(tmp_path / "s.json")]
    run_script(str(REPO / "benchmarks" / "slides.py"), *args, cwd=REPO)
    r = json.loads((tmp_path / "s.json").read_text())["scaling"]
    assert set(r) == {"6", "12"}
    for row in r.values():
        assert row["engine"]["first_step_s"] > 0 and row["standardizer_peak_rss_increase_mib"] is not None
    assert not list(tmp_path.glob("slides*"))


def test_slides_chunked_smoke(tmp_path):
    args = ["--chunked", "--smoke", "--tmp", str(tmp_path), "--json", str(tmp_path / "s.json")]
    run_script(str(REPO / "benchmarks" / "slides.py"), *args, cwd=REPO)
    r = json.loads((tmp_path / "s.json").read_text())["chunked"]
    assert r["bag_instances"] == 3000
    assert r["dense"]["loss"] == pytest.approx(r["chunk_512"]["loss"], rel=1e-6)
    assert r["max_abs_grad_difference"] < 1e-4 * max(r["max_abs_grad"], 1.0)  # chunked training is exact
    assert not list(tmp_path.glob("grads*"))
