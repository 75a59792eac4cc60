"""What every command shares: user errors with hints, plain-text tables, output and small option helpers."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CLIError",
    "check_output_folder",
    "finite_float",
    "nonnegative_float",
    "positive_int",
    "Formatter",
    "add_common",
    "data_dir",
    "device_option",
    "error_lines",
    "fmt",
    "format_table",
    "kv_table",
    "pm",
    "progress_enabled",
    "say",
    "wrap",
]


class CLIError(ValueError):
    """A user mistake detected by the command line itself, with a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


#: the hint of a data file that was found but could not be read as bags
DATA_FORMAT_HINT = (
    "`lossattn data info PATH` shows how a table or folder is read; tables: choose columns with --bag-column, "
    "--label-column, --feature-columns and the header with --header / --no-header (README: Your own bags)"
)

#: the hint of one bad bag file of a feature folder
BAG_FILE_HINT = (
    "fix or re-extract that bag's file, or drop its row from the manifest; `lossattn data info FOLDER` then reads "
    "the folder again"
)


def _names_a_bag_file(message: str) -> bool:
    return "bag file" in message or ", file /" in message or ("(index" in message and "file " in message)


_HINTS: list[tuple[tuple[str, ...], str]] = [
    (("unknown model", "uses unknown model"), "`lossattn models` lists the registered models"),
    (("unknown preset",), "`lossattn presets` lists the presets"),
    (("unknown reference method",), "--reference names one of the methods compared (default: the first)"),
    (
        ("unknown dataset", "no file or folder"),
        "`lossattn data list` shows the known datasets; your own bags: a folder with manifest.csv or a CSV/Parquet table",
    ),
    (
        ("unknown config key", "override", "unknown key", "must be a", "must be an", "must be true", "cannot use"),
        "overrides look like --set section.key=value (e.g. --set train.lr=1e-3); `lossattn presets --show NAME` "
        "prints every key",
    ),
    (
        ("expects instances of shape", "expects", "do not fit model", "classes but the model"),
        "use bags like the ones the checkpoint was trained on, or train a model on this data first",
    ),
    (("checkpoint",), "give the run folder of a finished `lossattn train` run, or its best.pt"),
    (
        ("only one class",),
        "a classifier learns from bags of at least two classes: check which column holds the label (--label-column) "
        "and its values (`lossattn data info FILE`)",
    ),
    (
        ("bag(s); stratified", "bag(s); a stratified", "cannot stratify"),
        "a class is too rare for this split: use fewer folds (--folds), a smaller validation split "
        "(--set protocol.val_fraction=0.1, or 0 to keep the last epoch), or more data of that class",
    ),
    (("is not a fixed benchmark", "is a generator"), "generated datasets are made on the fly: just name them"),
]


def error_lines(exc: BaseException) -> tuple[str, str]:
    """One error line and one hint line for a user mistake."""
    from lossattn.datasets import DataFormatError, DataNotFoundError

    special = _special_errors(exc)
    if special is not None:
        return special
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    hint = getattr(exc, "hint", None)
    if hint:
        return message, hint
    if isinstance(exc, DataNotFoundError) and len(lines) > 1:
        rest = [line for line in lines[1:] if not line.startswith(("/", "~")) and not line[:2].endswith(":\\")]
        return message.rstrip(":").removesuffix(". Looked for"), " ".join(rest) or lines[-1]
    if isinstance(exc, DataFormatError) and _names_a_bag_file(message):
        return message, BAG_FILE_HINT  # before the keyword hints: a reader's message may say "checkpoint"
    lowered = text.lower()
    for keys, h in _HINTS:
        if any(k in lowered for k in keys):
            return message, h
    if len(lines) > 1:
        return message, " ".join(lines[1:])
    if isinstance(exc, DataFormatError):
        return message, DATA_FORMAT_HINT
    return message, "run the command again with --debug to see where it failed"


def _special_errors(exc: BaseException) -> tuple[str, str] | None:
    """Error and hint for what is not a ValueError: OS errors on paths, missing packages, diverging training."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError | ValueError):
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or str(exc) or type(exc).__name__
        return (
            f"cannot write or read{where}: {reason}",
            "choose a path in a folder you can write to (--out DIR); it must not be a file, a device or a system folder",
        )
    if isinstance(exc, ImportError) and not isinstance(exc, ValueError):
        package = (exc.name or str(exc)).split(".")[0]
        extra = {"h5py": "formats", "pyarrow": "formats", "pandas": "formats", "joblib": "distributed",
                 "distributed": "distributed", "dask": "distributed"}.get(package)  # fmt: skip
        how = f"pip install 'lossattn[{extra}]' (or pip install {package})" if extra else f"pip install {package}"
        return f"this needs the Python package {package!r}, which is not installed ({exc})", how
    if isinstance(exc, FloatingPointError):
        return str(exc).splitlines()[0], (
            "the training diverged: lower the learning rate (--lr), or check the features for huge values "
            "(standardise them: --set data.standardize=true)"
        )
    return None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value:g}")
    return value


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """The output folder, created if needed; a clear error when it cannot be one (a file, a device, no access).

    Raises:
        CLIError: the path is a file or device, or the folder cannot be created or written.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise CLIError(
            f"{what} {str(path)!r} exists and is not a folder", f"give {what} a folder path (it is created if needed)"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".lossattn-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CLIError(
            f"{what} {str(path)!r} cannot be used as an output folder: {exc.strerror or exc}",
            "choose a folder you can write to (not under a file, /sys or /proc)",
        ) from exc
    return path


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def pm(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("n") or summary.get("mean") is None or math.isnan(summary["mean"]):
        return "–"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table; ``align`` is one character per column (``l``/``r``; numbers right by default)."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(str(h))] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if align is None:
        align = "".join(
            "r" if cells and all(_numberish(r[i]) for r in cells) and i > 0 else "l" for i in range(len(headers))
        )

    def line(values: Sequence[str]) -> str:
        out = []
        for i, v in enumerate(values):
            out.append(v.rjust(widths[i]) if align[i] == "r" else v.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line([str(h) for h in headers]), sep, *(line(r) for r in cells)])


def kv_table(rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """``key  value`` lines, keys aligned (no header)."""
    width = max(len(str(k)) for k, _ in rows)
    return "\n".join(f"{indent}{str(k).ljust(width)}  {fmt(v)}" for k, v in rows)


def wrap(text: str, width: int = 100) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) if text else ""


def _numberish(text: str) -> bool:
    t = text.replace("±", "").replace(" ", "").replace("–", "0").replace("%", "").replace("s", "")
    try:
        float(t.split("±")[0] if "±" in text else t)
        return True
    except ValueError:
        return False


def say(text: str = "") -> None:
    print(text, flush=True)


def progress_enabled(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)


def device_option(value: str | None) -> str | None:
    """``--device``: ``auto`` becomes cuda where available, else cpu; other values pass through."""
    if value is None:
        return None
    if value == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return value


def data_dir(args: argparse.Namespace) -> str | None:
    """``--data-dir`` with ``~`` expanded, or None."""
    value = getattr(args, "data_dir", None)
    return None if value is None else str(Path(value).expanduser())


class Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def add_common(p: argparse.ArgumentParser) -> None:
    """``--debug`` and ``--no-progress`` on a subcommand (they also work before the command)."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
    p.add_argument(
        "--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars (e.g. in logs)"
    )
