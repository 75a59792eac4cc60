"""DDP on slides: 2 gloo ranks on CPU training on a generated slide folder (feature files, coords, case groups)
equal the single-process run (dropout 0), each rank training on its own share of the slides."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import lossattn
from lossattn.datasets import load_feature_folder
from lossattn.engine import TrainConfig, Trainer
from lossattn.slides import make_synthetic_slides

GLOBAL_BATCH = 3

RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import lossattn
    from lossattn.datasets import load_feature_folder
    from lossattn.engine import TrainConfig, Trainer
    from lossattn.engine.strategies import DDPStrategy, init_distributed

    class Recording(DDPStrategy):
        seen = []

        def batches(self, source, epoch, seed, batch_size, pin):
            for batch, weight in super().batches(source, epoch, seed, batch_size, pin):
                self.seen.append({"epoch": epoch, "names": batch.names, "weight": weight})
                yield batch, weight

    root, out = sys.argv[1], sys.argv[2]
    rank, world, _ = init_distributed("gloo")
    ds = load_feature_folder(root)
    train, val = ds.subset(ds.split_indices("train")), ds.subset(ds.split_indices("val"))
    torch.manual_seed(0)
    model = lossattn.create_model(
        "loss_attention", in_features=32, extractor_kwargs={"hidden": [8], "dropout": 0.0}, lam=1.0
    )
    config = TrainConfig(**json.loads(sys.argv[3]))
    strategy = Recording()
    Trainer(model, config, seed=5, strategy=strategy).fit(train, val)
    with open(f"{out}/rank{rank}.json", "w") as fh:
        json.dump({"world": world, "seen": strategy.seen}, fh)
    if rank == 0:
        torch.save(model.state_dict(), f"{out}/model.pt")
    """
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_a_slide_folder_equals_the_single_process_run(tmp_path):
    root = tmp_path / "slides"
    make_synthetic_slides(root, preset="tiny", seed=11)
    ds = load_feature_folder(root)
    assert ds.has_coords and ds.coords(0).shape == (int(ds.bag_sizes[0]), 2)
    train, val = ds.subset(ds.split_indices("train")), ds.subset(ds.split_indices("val"))
    assert not set(train.groups) & set(val.groups)  # the splits keep every case's slides together
    config = {"epochs": 2, "batch_size": GLOBAL_BATCH, "lr": 3e-3, "consistency_weight": 2.0, "eval_batch_size": 4}
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        str(script), str(root), str(out), json.dumps(config),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    torch.manual_seed(0)
    ref = lossattn.create_model(
        "loss_attention", in_features=32, extractor_kwargs={"hidden": [8], "dropout": 0.0}, lam=1.0
    )
    Trainer(ref, TrainConfig(**config), seed=5).fit(train, val)
    got = torch.load(out / "model.pt", weights_only=True)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-5, msg=k)

    # the slides were sharded: per epoch every training slide was trained on exactly once, on one rank
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world"] == 2 for r in ranks)
    for epoch in range(2):
        trained = [
            (r, name)
            for r, rec in enumerate(ranks)
            for step in rec["seen"]
            if step["epoch"] == epoch and step["weight"] > 0
            for name in step["names"]
        ]
        names = [name for _, name in trained]
        assert sorted(names) == sorted(train.names)
        assert {r for r, _ in trained} == {0, 1}
    steps = [len(rec["seen"]) for rec in ranks]
    assert steps[0] == steps[1] == 2 * int(np.ceil(len(train) / GLOBAL_BATCH))  # lockstep all-reduces


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
