"""``lossattn models`` and ``lossattn presets``: the registries."""

from __future__ import annotations

import argparse

from lossattn.cli.common import format_table, say
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
    say("\nDefaults: benchmarks -> classic_mil, mnist-bags -> mnist_bags_binary, mnist-bags-multi -> "
         "mnist_bags_multiclass,\ncifar10-bags -> cifar10_bags, digits-bags -> digits_bags, your own data -> "
         "classic_mil.\nShow every key: lossattn presets --show NAME; change one: --set train.lr=3e-4")  # fmt: skip
    return 0


def add_parser(sub, add) -> None:
    add("models", "list the registered models and extractors", "example:\n  lossattn models", run_models)
    p = add("presets", "list the bundled experiment presets", "examples:\n  lossattn presets\n"
            "  lossattn presets --show classic_mil", run_presets)  # fmt: skip
    p.add_argument("--show", metavar="NAME", help="print one preset's YAML")
