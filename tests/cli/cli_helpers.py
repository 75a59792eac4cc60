"""Helpers of the CLI tests (a uniquely named module: tests have no __init__.py files)."""

from __future__ import annotations

import numpy as np

from lossattn.cli import main

TINY_DIGITS = [
    "--epochs",
    "2",
    "--set",
    "data.kwargs.num_bags=40",
    "--set",
    "data.test_kwargs.num_bags=30",
    "--no-progress",
]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Call the real entry point; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_feature_table(path, n_bags: int = 24, dim: int = 5, seed: int = 0):
    """A CSV table (one row per instance): positive bags hold one shifted instance, instance labels known."""
    rng = np.random.default_rng(seed)
    lines = ["bag_id,label,inst," + ",".join(f"f{k}" for k in range(dim))]
    sizes = []
    for b in range(n_bags):
        n = int(rng.integers(2, 6))
        sizes.append(n)
        y = b % 2
        hit = int(rng.integers(n)) if y else -1
        for t in range(n):
            x = rng.normal(size=dim) * 2.0 + 10.0  # far from 0/1 so that standardisation matters
            if t == hit:
                x[0] += 8.0
            lines.append(f"bag{b:02d},{y},{int(t == hit)}," + ",".join(f"{v:.4f}" for v in x))
    path.write_text("\n".join(lines) + "\n")
    return sizes
