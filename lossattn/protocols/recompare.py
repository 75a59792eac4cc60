"""Paired comparisons recomputed from saved results: any ``results.json`` of ``cv``, any ``reproduce`` JSON.

Every run record a run writes (method, repeat, fold, test metrics) is enough to pair methods again, with another
reference or another test, or across two result files of runs made at different times on the same splits
(``lossattn cv`` is seeded: the same data, protocol and seed give the same folds). :func:`find_experiments` walks a
saved JSON for its experiments (a ``{"runs": [...]}`` block per dataset / task / setting);
:func:`merge_experiments` joins the experiments of several files by where they sit, refusing to pair runs made
under different protocols or data; :func:`recompare` gives each experiment's comparison and spread.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossattn.protocols.comparison import check_reference, compare_methods, spread_summary

__all__ = ["SavedExperiment", "find_experiments", "load_saved_results", "merge_experiments", "recompare"]

#: record fields that name a separate experiment inside one flat list of runs (ablation scripts write one list)
_SPLITTING_FIELDS = ("dataset", "task", "setting")


@dataclass
class SavedExperiment:
    """The run records of one experiment found in saved results.

    Attributes:
        where: Where it sits, e.g. ``"datasets / musk1"`` (``""`` for a file that is one experiment).
        records: The run records (dicts with ``method``, ``repeat``, ``fold``, ``test_*`` metrics...).
        config: The experiment's resolved config when the file saved one (used to refuse mixing protocols).
        sources: The files the records came from.
    """

    where: str
    records: list[dict[str, Any]]
    config: dict[str, Any] | None = None
    sources: list[str] = field(default_factory=list)


def _is_run_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) and "method" in r for r in value)


def _split_flat(where: list[str], records: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    for name in _SPLITTING_FIELDS:
        values = list(dict.fromkeys(r.get(name) for r in records))
        if len(values) > 1:
            for v in values:
                yield from _split_flat([*where, f"{name} {v}"], [r for r in records if r.get(name) == v])
            return
    yield " / ".join(where), records


def find_experiments(obj: Any, source: str = "") -> list[SavedExperiment]:
    """Every experiment inside a saved JSON object, in file order.

    An experiment is a dict whose ``runs`` is a list of run records; its ``config`` comes along when present. A flat
    list of runs of several datasets, tasks or settings (a record field naming them) is split by that field.
    """
    found: list[SavedExperiment] = []

    def walk(value: Any, where: list[str]) -> None:
        if isinstance(value, dict):
            if _is_run_list(value.get("runs")):
                config = value.get("config") if isinstance(value.get("config"), dict) else None
                for label, records in _split_flat(where, value["runs"]):
                    found.append(SavedExperiment(label, list(records), config, [source] if source else []))
                return
            for key, item in value.items():
                walk(item, [*where, str(key)])
        elif isinstance(value, list) and _is_run_list(value):
            for label, records in _split_flat(where, value):
                found.append(SavedExperiment(label, list(records), None, [source] if source else []))

    walk(obj, [])
    return found


def load_saved_results(path: str | Path) -> list[SavedExperiment]:
    """The experiments of one saved result: a JSON file, or a run folder holding ``results.json``.

    Raises:
        FileNotFoundError: Nothing at ``path``, or a folder without ``results.json``.
        ValueError: The file is not JSON or holds no run records.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "results.json").is_file():
            raise FileNotFoundError(f"{path} is a folder without results.json (give a cv output folder or a JSON file)")
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON results file ({exc})") from None
    found = find_experiments(obj, str(path))
    if not found:
        raise ValueError(
            f"{path}: no run records (a 'runs' list of records with a 'method'); expected the results.json of "
            "`lossattn cv` or the JSON of `lossattn reproduce`"
        )
    return found


def _same_splits(config: dict[str, Any]) -> dict[str, Any]:
    # what decides the splits of a run: the data and the protocol (folds, repeats, seed, validation fraction)
    return {"data": config.get("data"), "protocol": config.get("protocol")}


def merge_experiments(groups: Sequence[Sequence[SavedExperiment]]) -> list[SavedExperiment]:
    """Join the experiments of several files by their place (``where``); a place found once stays as it is.

    Raises:
        ValueError: Two files hold experiments at one place whose data or protocol differ (their splits are not
            the same, so their runs cannot be paired), or both hold the same method's run of one split.
    """
    merged: dict[str, SavedExperiment] = {}
    for experiments in groups:
        for exp in experiments:
            have = merged.get(exp.where)
            if have is None:
                merged[exp.where] = SavedExperiment(exp.where, list(exp.records), exp.config, list(exp.sources))
                continue
            if (
                have.config is not None
                and exp.config is not None
                and _same_splits(have.config) != _same_splits(exp.config)
            ):
                raise ValueError(
                    f"{exp.sources[0] if exp.sources else 'a results file'} and {have.sources[0]} were run on different "
                    f"data or protocols{' at ' + exp.where if exp.where else ''}: their splits differ, so their runs "
                    "cannot be paired"
                )
            seen = {(r["method"], r.get("repeat"), r.get("fold")) for r in have.records}
            clash = next(((r["method"], r.get("repeat"), r.get("fold")) for r in exp.records
                          if (r["method"], r.get("repeat"), r.get("fold")) in seen), None)  # fmt: skip
            if clash is not None:
                raise ValueError(
                    f"method {clash[0]!r} has a run of repeat {clash[1]}, fold {clash[2]} in both {have.sources[0]} and "
                    f"{exp.sources[0] if exp.sources else 'another file'}; give each method's runs once"
                )
            have.records += exp.records
            have.sources += exp.sources
    return list(merged.values())


def recompare(
    experiments: Sequence[SavedExperiment], reference: str | None = None, test: str = "wilcoxon"
) -> list[dict[str, Any]]:
    """Each experiment's paired comparison (:func:`compare_methods`) and spread (:func:`spread_summary`).

    Returns:
        ``[{"where", "sources", "methods", "comparison", "spread"}]``; ``comparison`` is None for an experiment with a
        single method.

    Raises:
        ValueError: ``reference`` is not a method of an experiment, or an unknown test.
    """
    out = []
    for exp in experiments:
        methods = list(dict.fromkeys(r["method"] for r in exp.records))
        ref = check_reference(methods, reference)
        # splits are (repeat, fold) in cv, repeats alone where a protocol has no folds (fixed splits, generators)
        pair_on = ("repeat", "fold") if any(r.get("fold") is not None for r in exp.records) else ("repeat",)
        comparison = compare_methods(exp.records, ref, test, pair_on=pair_on) if len(methods) > 1 else None
        out.append(
            {
                "where": exp.where,
                "sources": exp.sources,
                "methods": methods,
                "comparison": comparison,
                "spread": spread_summary(exp.records),
            }
        )
    return out
