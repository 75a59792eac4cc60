"""Deprecated entry point ``python -m lossattn.train.ddp`` (lossattn 0.1); runs :mod:`lossattn.protocols.ddp`."""

from lossattn.protocols.ddp import main, run, train_ddp

__all__ = ["main", "run", "train_ddp"]

if __name__ == "__main__":
    run()
