"""Fan-out of many runs: joblib worker processes and a Dask cluster give the serial run's records exactly."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lossattn.protocols import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ProtocolConfig,
    TrainConfig,
    run_experiment,
)

MLP = {"extractor": "mlp", "extractor_kwargs": {"hidden": [8], "dropout": 0.1}}


def write_table(path, n_bags: int = 20, dim: int = 4, seed: int = 0) -> None:
    """A user CSV table (one row per instance); positive bags hold one shifted instance."""
    rng = np.random.default_rng(seed)
    lines = ["bag_id,label," + ",".join(f"f{k}" for k in range(dim))]
    for b in range(n_bags):
        n = int(rng.integers(2, 6))
        y = b % 2
        hit = int(rng.integers(n)) if y else -1
        for t in range(n):
            x = rng.normal(size=dim)
            if t == hit:
                x[0] += 3.0
            lines.append(f"bag{b:02d},{y}," + ",".join(f"{v:.5f}" for v in x))
    path.write_text("\n".join(lines) + "\n")


# every config pins threads=1: workers run one thread each, and float reductions (hence the last bits of the
# weights) depend on the thread count, so a serial run on more threads is not bit-identical to them


def table_config(path) -> ExperimentConfig:
    """2-fold CV × 1 repeat × 2 methods on a user table = 4 runs (dropout on, so the RNG matters)."""
    return ExperimentConfig(
        name="fanout-table",
        data=DataConfig(name=str(path), standardize=True),
        protocol=ProtocolConfig(kind="cv", folds=2, repeats=1, val_fraction=0.25, seed=3),
        train=TrainConfig(epochs=3, batch_size=2, lr=1e-2, eval_batch_size=16, threads=1),
        methods={
            "loss_attention": MethodConfig("loss_attention", {**MLP, "lam": 1.0}),
            "attention": MethodConfig("attention", dict(MLP)),
        },
    ).validate()


def digits_config() -> ExperimentConfig:
    """digits-bags (a generator: fresh bags per repeat), 2 repeats × 1 method, image instances."""
    return ExperimentConfig(
        name="fanout-digits",
        data=DataConfig(
            name="digits-bags-multi", kwargs={"num_bags": 24, "mean_bag_size": 5}, test_kwargs={"num_bags": 16}
        ),
        protocol=ProtocolConfig(kind="fixed", repeats=2, val_fraction=0.25, seed=1),
        train=TrainConfig(epochs=2, batch_size=1, lr=1e-3, eval_batch_size=32, threads=1),
        methods={"loss_attention": MethodConfig("loss_attention", {**MLP, "lam": 2.0})},
    ).validate()


def comparable(result: dict) -> list[dict]:
    """The run records without wall-clock times, in plan order."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in result["runs"]]


def assert_same_runs(serial: dict, other: dict, serial_dir, other_dir) -> None:
    assert comparable(other) == comparable(serial)
    assert other["summary"].keys() == serial["summary"].keys()
    # the selected weights (hence every test probability) are bit-identical
    for rec in serial["runs"]:
        key = f"r{rec['repeat']}" + ("" if rec["fold"] is None else f"_f{rec['fold']}")
        a = torch.load(serial_dir / rec["method"] / key / "best.pt", weights_only=False)
        b = torch.load(other_dir / rec["method"] / key / "best.pt", weights_only=False)
        assert a["epoch"] == b["epoch"] == rec["selected_epoch"]
        for name, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][name]), name


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("fanout") / "bags.csv"
    write_table(path)
    return path


@pytest.fixture(scope="module")
def serial_table(table, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial_table")
    return run_experiment(table_config(table), out), out


@pytest.fixture(scope="module")
def serial_digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial_digits")
    return run_experiment(digits_config(), out), out


def test_serial_runs_are_distinct(serial_table, serial_digits):
    # sanity: the comparison below is not between constant records
    recs = serial_table[0]["runs"]
    assert len(recs) == 4 and len({(r["method"], r["fold"]) for r in recs}) == 4
    assert len({r["test_loss"] for r in recs}) > 1
    assert len(serial_digits[0]["runs"]) == 2


def test_joblib_jobs_match_serial(table, serial_table, tmp_path):
    serial, serial_dir = serial_table
    out = tmp_path / "jobs"
    parallel = run_experiment(table_config(table), out, jobs=2)
    assert_same_runs(serial, parallel, serial_dir, out)


def test_joblib_generator_data_matches_serial(serial_digits, tmp_path):
    serial, serial_dir = serial_digits
    out = tmp_path / "jobs"
    parallel = run_experiment(digits_config(), out, jobs=2)
    assert_same_runs(serial, parallel, serial_dir, out)


def test_dask_local_cluster_matches_serial(table, serial_table, tmp_path):
    distributed = pytest.importorskip("distributed")
    serial, serial_dir = serial_table
    out = tmp_path / "dask"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        result = run_experiment(table_config(table), out, scheduler=cluster.scheduler_address)
    assert_same_runs(serial, result, serial_dir, out)


def test_dask_threaded_workers_match_serial(table, serial_table, tmp_path):
    # Dask workers run several tasks at once in threads by default; runs share torch's global RNG, so a
    # worker process must run one training run at a time to keep every run's result what it is alone
    distributed = pytest.importorskip("distributed")
    serial, serial_dir = serial_table
    out = tmp_path / "dask_threads"
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=4,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        result = run_experiment(table_config(table), out, scheduler=cluster.scheduler_address)
    assert_same_runs(serial, result, serial_dir, out)


def test_dask_scheduler_without_workers_raises_instead_of_waiting(table, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from lossattn.protocols import fanout

    monkeypatch.setattr(fanout, "DASK_WORKER_WAIT_S", 1.0)
    with distributed.LocalCluster(
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        with pytest.raises(ValueError, match=r"has no worker after 1 s.*dask worker " + re.escape(address)):
            run_experiment(table_config(table), tmp_path / "none", scheduler=address)


def _square(x: int) -> int:
    return x * x


def test_joblib_map_keeps_order_and_silences_only_lokys_worker_restart_warning(monkeypatch):
    import warnings

    import joblib

    from lossattn.protocols import fanout as protocols

    assert protocols._joblib_map(_square, [3, 1, 2], jobs=2) == [9, 1, 4]

    class RestartingParallel:  # what loky does when it recycles a worker whose memory grew by > 300 MB
        def __init__(self, **kwargs):
            pass

        def __call__(self, calls):
            warnings.warn(
                "A worker stopped while some jobs were given to the executor. This can be caused by a too "
                "short worker timeout or by a memory leak.",
                UserWarning,
                stacklevel=1,
            )
            warnings.warn("some other joblib warning", UserWarning, stacklevel=1)
            return [f(*a, **k) for f, a, k in calls]

    monkeypatch.setattr(joblib, "Parallel", RestartingParallel)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert protocols._joblib_map(_square, [4], jobs=2) == [16]
    assert [str(w.message) for w in caught] == ["some other joblib warning"]
