"""``python -m lossattn``: the ``lossattn`` command."""

from lossattn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
