"""What an experiment's records add up to: per-method summaries and the sentence that states the protocol."""

from __future__ import annotations

from typing import Any

import numpy as np

from lossattn import metrics as M
from lossattn.protocols.config import ExperimentConfig

__all__ = ["aggregate", "protocol_description", "selection_description"]

_RULES = {
    "error": "lowest validation error, then lowest validation loss",
    "balanced_error": "highest validation balanced accuracy, then lowest validation loss",
    "loss": "lowest validation loss",
    "auc": "highest validation AUC, then lowest validation loss",
}


def selection_description(cfg: ExperimentConfig) -> str:
    """How the epoch is chosen (and, for binary models, the decision threshold), as a phrase."""
    if cfg.protocol.val_fraction <= 0:
        return "no validation split: the last epoch is kept"
    text = f"epoch chosen on the validation bags: {_RULES[cfg.train.selection]}"
    if cfg.train.threshold == "validation":
        text += "; binary decision threshold: the one maximising validation balanced accuracy"
    return text


def protocol_description(cfg: ExperimentConfig) -> str:
    """A sentence stating the protocol, for reports."""
    p = cfg.protocol
    selection = (
        f"model selection on a stratified validation split of {p.val_fraction:.0%} of each run's training bags "
        f"({_RULES[cfg.train.selection]}); the test bags never influence training or selection"
        if p.val_fraction > 0
        else "no validation split: the last epoch is kept"
    )
    if p.kind == "cv":
        times = "run once" if p.repeats == 1 else f"repeated {p.repeats} times"
        split = f"{p.folds}-fold stratified cross-validation by bag, {times} (seed {p.seed})"
    else:
        repeats = "1 repeat" if p.repeats == 1 else f"{p.repeats} repeats with fresh seeds"
        split = f"fixed train/test bags, {repeats} (seed {p.seed})"
    return f"{split}; {selection}; {cfg.train.epochs} epochs, batch size {cfg.train.batch_size}."


def _mean_retrieval(per_run: list[dict[str, float]]) -> dict[str, float]:
    """Mean precision / recall / F over runs at one τ, plus how many runs retrieved anything.

    A run that retrieves nothing has no precision (its per-run record says 0, as scikit-learn's
    ``zero_division=0``); averaging that 0 in would drag the curve down for a run that made no false
    retrieval at all, so precision is averaged over the runs that retrieved something (NaN when none did).
    Recall and F are 0 for such a run and are averaged over all runs.
    """
    retrieving = [r.get("retrieved", 1) > 0 for r in per_run]
    precision = [r["precision"] if got else float("nan") for r, got in zip(per_run, retrieving, strict=True)]
    return {
        "precision": M.summarize(precision)["mean"],
        "recall": M.summarize([r["recall"] for r in per_run])["mean"],
        "f1": M.summarize([r["f1"] for r in per_run])["mean"],
        "runs_retrieving": sum(retrieving),
        "runs": len(per_run),
    }


#: summary name -> record field, for every metric a record may carry (single-label, multi-label, image runs)
_METRICS = {
    "balanced_accuracy": "test_balanced_accuracy",
    "auc": "test_auc",
    "accuracy": "test_accuracy",
    "top5": "test_top5",
    "micro_f1": "test_micro_f1",
    "macro_f1": "test_macro_f1",
    "map": "test_map",
    "hamming": "test_hamming",
    "patch_ap": "test_patch_ap",
    "froc": "test_froc",
}


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: mean ± std over runs of every test metric the records carry, over repeat means, the oracle
    figure, the selected epoch, run time and instance retrieval.

    Balanced accuracy and AUC come first: on imbalanced data a model that predicts the majority class has a high
    accuracy and a balanced accuracy of 1/K.
    """
    summary: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        rows = [r for r in records if r["method"] == method]
        entry: dict[str, Any] = {"runs": len(rows)}
        for name, field in _METRICS.items():
            if any(r.get(field) is not None for r in rows):
                entry[name] = M.summarize([r.get(field) for r in rows])
        if "accuracy" in entry:
            by_repeat: dict[int, list[float]] = {}
            for r in rows:
                by_repeat.setdefault(r["repeat"], []).append(r["test_accuracy"])
            entry["accuracy_repeat_means"] = M.summarize([float(np.mean(v)) for v in by_repeat.values()])
        entry["oracle_accuracy"] = M.summarize([r.get("oracle_test_accuracy") for r in rows])
        entry["selected_epoch"] = M.summarize([r["selected_epoch"] for r in rows])
        entry["seconds"] = M.summarize([r["seconds"] for r in rows])
        retrievals = [r["instance_retrieval"] for r in rows if r.get("instance_retrieval")]
        if retrievals:
            entry["instance_retrieval"] = {tau: _mean_retrieval([x[tau] for x in retrievals]) for tau in retrievals[0]}
        summary[method] = entry
    return summary
