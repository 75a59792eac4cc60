"""``lossattn models`` and ``lossattn presets``: the registries."""

from __future__ import annotations

import argparse
import textwrap

from lossattn.cli.common import format_table, say
from lossattn.cli.experiment import DEFAULT_PRESETS, FALLBACK_PRESET, USER_DATA_PRESET
from lossattn.models.extractors import list_extractors
from lossattn.models.registry import EXTRACTORS, list_models, model_info
from lossattn.protocols.config import list_presets, load_preset, preset_dir

__all__ = ["add_parser", "run_models", "run_presets"]


def run_models(args: argparse.Namespace) -> int:
    rows = [[name, model_info(name)] for name in list_models()]
    say(format_table(["model", "description"], rows, align="ll"))
    say("\nextractors (model kwarg extractor=...):")
    say(format_table(["extractor", "description"], [[e, EXTRACTORS.describe(e)] for e in list_extractors()], "ll"))
    say("\nUse: lossattn train --model NAME [--dataset D]  |  Python: lossattn.create_model(NAME, in_features=...)")
    return 0


def _preset_summary(name: str) -> tuple[str, str, str, str]:
    cfg = load_preset(name)
    text = (preset_dir() / f"{name}.yaml").read_text().splitlines()
    comment = " ".join(line.lstrip("# ").strip() for line in text if line.startswith("#"))
    first = comment.split(". ")[0].rstrip(".") if comment else ""
    protocol = (
        f"{cfg.protocol.folds}-fold CV x{cfg.protocol.repeats}"
        if cfg.protocol.kind == "cv"
        else f"fixed x{cfg.protocol.repeats}"
    )
    return cfg.data.name, protocol, ", ".join(cfg.methods), first


def run_presets(args: argparse.Namespace) -> int:
    if args.show:
        load_preset(args.show)  # a clear error for unknown names
        say((preset_dir() / f"{args.show}.yaml").read_text().rstrip())
        return 0
    rows = []
    for name in list_presets():
        try:
            data, protocol, methods, first = _preset_summary(name)
        except (ValueError, TypeError) as exc:  # e.g. a preset whose models are not registered in this install
            rows.append([name, "–", "–", f"(cannot load: {str(exc).splitlines()[0][:70]})"])
            continue
        if len(methods) > 60:
            methods = methods[:57].rsplit(", ", 1)[0] + ", ..."
        rows.append([name, data, protocol, methods])
    say(format_table(["preset", "dataset", "protocol", "methods"], rows, align="llll"))
    say("\n" + _defaults_text() + "\nShow every key: lossattn presets --show NAME; change one: --set train.lr=3e-4")
    return 0


def _defaults_text() -> str:
    """Which preset each dataset gets when none is named, from the table the commands use."""
    by_preset: dict[str, list[str]] = {}
    for dataset, preset in DEFAULT_PRESETS.items():
        by_preset.setdefault(preset, []).append(dataset)
    parts = [f"{', '.join(names)} -> {preset}" for preset, names in by_preset.items()]
    parts.append(f"your own table or folder -> {USER_DATA_PRESET}")
    parts.append(f"no dataset named -> {FALLBACK_PRESET}")
    return textwrap.fill("Defaults: " + "; ".join(parts) + ".", width=110)


def add_parser(sub, add) -> None:
    add("models", "list the registered models and extractors", "example:\n  lossattn models", run_models)
    p = add("presets", "list the bundled experiment presets", "examples:\n  lossattn presets\n"
            "  lossattn presets --show classic_mil", run_presets)  # fmt: skip
    p.add_argument("--show", metavar="NAME", help="print one preset's YAML")
