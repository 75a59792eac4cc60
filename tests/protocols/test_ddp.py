"""DDP training: 2 gloo processes on CPU (torchrun) == the single-process run with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from lossattn.engine.strategies import shard
from lossattn.protocols import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    ProtocolConfig,
    RunSpec,
    TrainConfig,
    config_to_dict,
    execute_run,
    prepare_split,
)
from lossattn.protocols.ddp import train_ddp

METHOD = "loss_attention"
GLOBAL_BATCH = 3  # with 2 ranks: shards of 2 and 1 bags, and a last batch of 1 bag leaves rank 1 empty


def ddp_config() -> ExperimentConfig:
    """digits-bags, dropout 0 (deterministic), consistency cost on (the ensemble is gathered across ranks)."""
    return ExperimentConfig(
        name="ddp",
        data=DataConfig(
            name="digits-bags-multi", kwargs={"num_bags": 22, "mean_bag_size": 5}, test_kwargs={"num_bags": 16}
        ),
        protocol=ProtocolConfig(kind="fixed", repeats=1, val_fraction=0.25, seed=2),
        train=TrainConfig(
            epochs=3,
            batch_size=GLOBAL_BATCH,
            lr=3e-3,
            weight_decay=1e-4,
            consistency_weight=5.0,
            eval_batch_size=32,
        ),
        methods={
            METHOD: MethodConfig(
                "loss_attention", {"extractor": "mlp", "extractor_kwargs": {"hidden": [16], "dropout": 0.0}, "lam": 2.0}
            )
        },
    ).validate()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_model(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("seconds", "world_size", "global_batch")}


def test_shard_covers_the_global_batch_once():
    batch = [7, 3, 9, 1, 4]
    parts = [shard(batch, r, 2) for r in range(2)]
    assert parts == [[7, 9, 4], [3, 1]]
    assert shard([5], 1, 2) == []


def test_single_process_equals_execute_run(tmp_path):
    cfg = ddp_config()
    spec = RunSpec(METHOD, 0, None)
    ref = execute_run(cfg, spec, tmp_path / "ref")
    one = train_ddp(cfg, METHOD, out_dir=tmp_path / "ddp1")
    assert without_timing(one) == without_timing(ref)
    a, b = (
        load_model(tmp_path / "ref" / METHOD / "r0" / "best.pt"),
        load_model(tmp_path / "ddp1" / METHOD / "r0" / "best.pt"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_gloo_ranks_match_single_process(tmp_path):
    cfg = ddp_config()
    train, _, _ = prepare_split(cfg, 0, None)
    assert len(train) % GLOBAL_BATCH == 1  # the last global batch has one bag: rank 1 gets none
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    out = tmp_path / "ddp2"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--nnodes",
        "1",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "lossattn.protocols.ddp",
        "--config",
        str(cfg_path),
        "--method",
        METHOD,
        "--backend",
        "gloo",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ref = execute_run(cfg, RunSpec(METHOD, 0, None), tmp_path / "ref")
    got = json.loads((out / METHOD / "r0" / "result.json").read_text())
    assert got["world_size"] == 2 and got["global_batch"] == GLOBAL_BATCH
    assert got["selected_epoch"] == ref["selected_epoch"]
    assert got["test_accuracy"] == ref["test_accuracy"]
    assert got["test_loss"] == pytest.approx(ref["test_loss"], abs=1e-5)
    for name in ("best.pt", "checkpoint.pt"):  # selected weights and last-epoch weights
        a = load_model(tmp_path / "ref" / METHOD / "r0" / name)
        b = load_model(out / METHOD / "r0" / name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=f"{name}:{k}")
    # rank 0 logged the whole epoch (all ranks' bags), as the single-process run did
    rows = [json.loads(line) for line in (out / METHOD / "r0" / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [
        json.loads(line) for line in (tmp_path / "ref" / METHOD / "r0" / "metrics.jsonl").read_text().splitlines()
    ]
    for r, q in zip(rows, ref_rows, strict=True):
        assert r["train_accuracy"] == q["train_accuracy"]
        assert r["train_loss"] == pytest.approx(q["train_loss"], abs=1e-5)
        assert r["val_loss"] == pytest.approx(q["val_loss"], abs=1e-5)
