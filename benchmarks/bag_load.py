"""Time to read one whole-slide-sized bag (20,000 x 1024 float32) through ``FeatureFolderDataset``.

Writes the bag once as ``h5_files/big.h5`` (CLAM layout, with coords) and ``pt_files/bigpt.pt`` (a bare tensor)
into a temporary folder, then times ``ds[i]`` (and ``ds[i]`` followed by ``x.sum()``, which touches every value
as a consumer such as ``collate_bags`` would) over repeated reads, after a first read. With ``--old-ref REF``
the data layer of that git revision is extracted with ``git archive`` and timed in the same process,
alternating with the current one, so both see the same machine load.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/bag_load.py --reps 30 --old-ref 7a8267d
"""

from __future__ import annotations

import argparse
import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _old_datasets(ref: str, into: Path):
    """Imports ``lossattn/datasets`` of git revision ``ref`` as the package ``lossattn_old.datasets``."""
    repo = Path(__file__).resolve().parents[1]
    blob = subprocess.run(
        ["git", "-C", str(repo), "archive", ref, "lossattn/datasets"], check=True, capture_output=True
    ).stdout
    pkg = into / "lossattn_old"
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into / "x", filter="data")
    (into / "x" / "lossattn").rename(pkg)
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(into))
    return importlib.import_module("lossattn_old.datasets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--instances", type=int, default=20000)
    parser.add_argument("--features", type=int, default=1024)
    parser.add_argument("--old-ref", default=None, help="git revision to compare with (e.g. 7a8267d)")
    args = parser.parse_args()
    import h5py

    import lossattn.datasets as new

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "folder"
        (root / "h5_files").mkdir(parents=True)
        (root / "pt_files").mkdir()
        x = np.random.default_rng(0).normal(size=(args.instances, args.features)).astype(np.float32)
        with h5py.File(root / "h5_files" / "big.h5", "w") as f:
            f["features"] = x
            f["coords"] = np.zeros((args.instances, 2), np.int64)
        torch.save(torch.from_numpy(x), root / "pt_files" / "bigpt.pt")
        (root / "manifest.csv").write_text("bag_id,label\nbig,0\nbigpt,1\n")
        versions = [("current", new)]
        if args.old_ref:
            versions.insert(0, (args.old_ref, _old_datasets(args.old_ref, Path(tmp))))
        print(f"bag {args.instances} x {args.features} float32 ({x.nbytes / 2**20:.0f} MiB), {args.reps} reads")
        for _ in range(2):
            for label, mod in versions:
                ds = mod.load_feature_folder(root)
                for i, kind in enumerate(("h5", "pt")):
                    t0 = time.perf_counter()
                    ds[i]
                    first = time.perf_counter() - t0
                    read, used = [], []
                    for _ in range(args.reps):
                        t0 = time.perf_counter()
                        bag = ds[i]
                        t1 = time.perf_counter()
                        float(bag.x.sum())
                        used.append(time.perf_counter() - t0)
                        read.append(t1 - t0)
                    if not np.array_equal(bag.x.numpy(), x):
                        raise SystemExit(f"{label} {kind}: the bag read back differs from the one written")
                    print(
                        f"{label:>8} {kind}: first read {first * 1e3:6.1f} ms | ds[i] median {np.median(read) * 1e3:6.1f} "
                        f"ms (min {np.min(read) * 1e3:6.1f}) | ds[i] + x.sum() median {np.median(used) * 1e3:6.1f} ms "
                        f"(min {np.min(used) * 1e3:6.1f})"
                    )


if __name__ == "__main__":
    main()
