"""Algorithmic unit tests of MIL assumptions as generated bag datasets (Raff & Holt, NeurIPS 2023).

Raff & Holt, *Reproducibility in Multiple Instance Learning: A Case For Algorithmic Unit Tests*
(NeurIPS 2023, arXiv:2310.17867) build small synthetic problems whose *training* bags hold a shortcut
that contradicts the MIL assumption being tested and whose *test* bags reverse it. A model that obeys the
assumption cannot use the shortcut, learns the real concept and scores well on the test bags; a model that
took the shortcut scores at or below chance (ROC AUC <= 0.5) there.

Three tests (the paper's Algorithms 1-3):

* ``single_concept`` -- single-concept standard-MIL test (Algorithm 1). Standard (presence) assumption:
  a bag is positive iff it holds a positive-concept instance. Shortcut: a "poison" instance far from all
  other data is put in every *negative* training bag and in every *positive* test bag. Under the standard
  assumption no instance may be evidence *for* the negative class, so a respecting model ignores it.
* ``multi_concept`` -- two concepts, both needed (Algorithm 2; torchmil calls it "multi-concept standard
  MIL"): a bag is positive iff it holds an instance of concept A *and* one of concept B (the threshold-based
  assumption of Weidmann et al. 2003 with threshold 1 per concept). Negative bags hold exactly one
  instance of one concept. Same poison shortcut as above.
* ``false_frequency`` -- false-frequency reliance (Algorithm 3): positive iff both concepts are present.
  Training negatives hold one instance of one concept, so "two or more concept instances" separates the
  classes perfectly in training; test negatives hold 35-44 copies of one concept, so a model that counts
  instead of checking which concepts are present calls them positive.

Provenance of the numbers (read this before citing them). The paper's body (the algorithm boxes) could not
be retrieved where this module was written; only its abstract and introduction were. The distributions and
counts below are those of torchmil's ``SCStandardMILDataset`` / ``MCStandardMILDataset`` /
``FalseFrequencyMILDataset`` (which state that they implement Algorithms 1-3), read as follows: torchmil
draws counts with ``torch.randint(low, high)``, whose upper bound is *excluded*; we keep that literal range
except where it collapses to a constant (``randint(1, 2)`` is always 1, ``randint(0, 1)`` always 0), which
cannot be the intent of a random draw, and there read the bounds as inclusive. torchmil's
``torch.distributions.Normal(loc, scale)`` takes a standard deviation; so do the ``*_std`` values here.
Where torchmil leaves a value to the caller (dimension, number of bags, the single-concept test's number
of background instances) the default is our choice and says so.

Instance labels name what each instance *is*, not an instance class: ``0`` background (``N(0, I)``),
``1`` concept A, ``2`` concept B, ``3`` poison (see :data:`INSTANCE_CODES`). They are never ``-1``. Note
that concept instances also occur in negative bags of the two-concept tests, so "label > 0" is not
"instance is positive" here.

Every generator owns a private ``numpy.random.Generator`` seeded from ``(seed, split)``: the same arguments
give the same bags, and the train and test splits of one seed are independent draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bags import BagDataset

__all__ = [
    "AssumptionTest",
    "ASSUMPTION_TESTS",
    "INSTANCE_CODES",
    "PAPER",
    "make_single_concept_bags",
    "make_multi_concept_bags",
    "make_false_frequency_bags",
]

PAPER = (
    "Raff & Holt, Reproducibility in Multiple Instance Learning: A Case For Algorithmic Unit Tests, "
    "NeurIPS 2023, arXiv:2310.17867"
)

BACKGROUND, CONCEPT_A, CONCEPT_B, POISON = 0, 1, 2, 3
INSTANCE_CODES: dict[int, str] = {
    BACKGROUND: "background N(0, I)",
    CONCEPT_A: "concept A",
    CONCEPT_B: "concept B",
    POISON: "poison (shortcut) instance",
}

_SPLITS = {"train": 0, "test": 1}
_CHANCE_AUC = 0.5
_PASS_CRITERION = (
    "test ROC AUC above chance (0.5): the test bags reverse the training shortcut, so a model that obeys "
    "the assumption scores well and one that took the shortcut scores at or below 0.5"
)


# --------------------------------------------------------------------------- argument checks


def _check_split(split: Any) -> int:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return _SPLITS[split]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a positive number, got {value!r}") from e
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _check_range(name: str, value: Any, minimum: int) -> tuple[int, int]:
    """An inclusive integer range ``(lo, hi)`` with ``minimum <= lo <= hi`` (an int ``k`` means ``(k, k)``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    try:
        lo, hi = value
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an int or an inclusive range (lo, hi), got {value!r}") from e
    ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (lo, hi))
    if not ok or int(lo) < minimum or int(hi) < int(lo):
        raise ValueError(
            f"{name} must be an inclusive range (lo, hi) of integers with {minimum} <= lo <= hi, got {value!r}"
        )
    return int(lo), int(hi)


def _draw(rng: np.random.Generator, r: tuple[int, int]) -> int:
    return int(rng.integers(r[0], r[1] + 1))


def _gauss(rng: np.random.Generator, mean: float, std: float, k: int, dim: int) -> np.ndarray:
    return (mean + std * rng.standard_normal((k, dim))).astype(np.float32)


def _balanced_labels(rng: np.random.Generator, num_bags: int) -> np.ndarray:
    """``num_bags // 2`` positives, the rest negative, in random order."""
    labels = np.zeros(num_bags, dtype=np.int64)
    labels[: num_bags // 2] = 1
    return rng.permutation(labels)


def _finish(
    bags: list[tuple[list[np.ndarray], list[int]]],
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    name: str,
    split: str,
    meta: dict[str, Any],
) -> BagDataset:
    """Stacks each bag's parts, shuffles the instance order within the bag and builds the dataset."""
    xs, codes = [], []
    for parts, part_codes in bags:
        x = np.concatenate(parts)
        c = np.concatenate(
            [np.full(p.shape[0], code, dtype=np.int64) for p, code in zip(parts, part_codes, strict=True)]
        )
        order = rng.permutation(x.shape[0])  # position in the bag carries no information
        xs.append(x[order])
        codes.append(c[order])
    sizes = np.array([x.shape[0] for x in xs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return BagDataset.from_flat(
        np.concatenate(xs),
        offsets,
        labels,
        instance_labels=np.concatenate(codes),
        names=[f"{split}-{i:05d}" for i in range(len(xs))],
        num_classes=2,
        name=name,
        class_names=["negative", "positive"],
        meta=meta,
    )


def _check_common(split: str, seed: int, num_bags: int, dim: int, background) -> tuple[int, int, int, tuple[int, int]]:
    """The arguments every test shares, checked: ``(seed, num_bags, dim, background range)``."""
    _check_split(split)
    return (_check_int("seed", seed, 0), _check_int("num_bags", num_bags, 2), _check_int("dim", dim, 1),
            _check_range("background", background, 1))  # fmt: skip


def _generator_and_labels(split: str, seed: int, num_bags: int, stream: int | None = None):
    """The test's private generator, seeded by ``(seed, split[, stream])``, and its balanced bag labels."""
    key = [int(seed), _check_split(split)] + ([] if stream is None else [stream])
    rng = np.random.default_rng(key)
    return rng, _balanced_labels(rng, num_bags)


def _background(rng: np.random.Generator, bg: tuple[int, int], dim: int) -> tuple[list[np.ndarray], list[int]]:
    """A bag's first part: ``n ~ U{bg}`` background instances ``N(0, I)``, and its instance code."""
    return [_gauss(rng, 0.0, 1.0, _draw(rng, bg), dim)], [BACKGROUND]


def _poison_meta(split: str, pmean: float, pstd: float) -> dict[str, Any]:
    """What a poisoned test's ``meta`` says of the poison: where it is in this split and its distribution."""
    where = "negative" if split == "train" else "positive"
    return {
        "shortcut": f"one poison instance N({pmean}, {pstd}^2 I) in every {where} bag of this split (the "
        f"{'training' if split == 'train' else 'test'} split)",
        "poison_in": where,
        "poison": [pmean, pstd],
    }


def _common_meta(test: str, split: str, seed: int, dim: int, num_bags: int) -> dict[str, Any]:
    return {
        "test": test,
        "paper": PAPER,
        "split": split,
        "seed": int(seed),
        "dim": dim,
        "num_bags": num_bags,
        "chance_auc": _CHANCE_AUC,
        "pass_criterion": _PASS_CRITERION,
        "instance_codes": dict(INSTANCE_CODES),
    }


# --------------------------------------------------------------------------- the three tests


def make_single_concept_bags(
    split: str = "train",
    seed: int = 0,
    *,
    num_bags: int = 1000,
    dim: int = 16,
    background: int | tuple[int, int] = (1, 9),
    concept_count: int | tuple[int, int] = (1, 3),
    concept_wide_std: float = 3.0,
    concept_shift_mean: float = 1.0,
    poison_mean: float = -10.0,
    poison_std: float = 0.1,
) -> BagDataset:
    """Single-concept standard-MIL test (Raff & Holt 2023, Algorithm 1).

    Bag composition (instances shuffled within the bag):

    * every bag: ``n_bg ~ U{background}`` background instances ``N(0, I_dim)``;
    * positive bags: ``k ~ U{concept_count}`` instances of the one positive concept, each drawn from
      either component with probability 1/2: ``N(0, concept_wide_std² I)`` or ``N(concept_shift_mean·1, I)``
      (both labelled ``1``);
    * poison ``N(poison_mean·1, poison_std² I)`` (label ``3``): one instance in every **negative** bag of
      the ``"train"`` split and in every **positive** bag of the ``"test"`` split.

    The poison separates the training classes perfectly and is a far easier signal than the concept; it
    is negative evidence, which the standard assumption rules out, and the test split reverses it.

    From the paper via torchmil: the two concept components, the background and poison distributions, one
    poison instance, ``k`` in 1..3 (torchmil ``randint(1, 4)``), half the bags positive. Our choices:
    ``dim`` (torchmil: a required argument), ``background`` (torchmil: a fixed, required ``B``; we draw it
    from 1..9 like the two other tests so bag size varies), ``num_bags``.

    Args:
        split: ``"train"`` (poison in negatives) or ``"test"`` (poison in positives).
        seed: Seed; ``(seed, split)`` seeds a private generator.
        num_bags: Number of bags ``B`` (>= 2); ``B // 2`` are positive.
        dim: Instance dimension ``D``.
        background: Inclusive range (or fixed int) of the number of background instances per bag (>= 1).
        concept_count: Inclusive range of the number of concept instances in a positive bag (>= 1).
        concept_wide_std: Standard deviation of the wide concept component ``N(0, σ² I)``.
        concept_shift_mean: Mean of the shifted concept component ``N(μ·1, I)``.
        poison_mean: Mean of every coordinate of the poison instance.
        poison_std: Standard deviation of the poison instance.

    Returns:
        A :class:`BagDataset` with instances ``(n_i, D)``, labels 0/1, instance labels
        (:data:`INSTANCE_CODES`) and ``meta`` describing the test, the shortcut and the pass criterion.

    Raises:
        ValueError: A bad argument (the message names it).
    """
    seed, num_bags, dim, bg = _check_common(split, seed, num_bags, dim, background)
    kc = _check_range("concept_count", concept_count, 1)
    wide = _check_positive("concept_wide_std", concept_wide_std)
    shift = float(concept_shift_mean)
    pmean = float(poison_mean)
    pstd = _check_positive("poison_std", poison_std)
    rng, labels = _generator_and_labels(split, seed, num_bags)
    poisoned_class = 0 if split == "train" else 1
    bags = []
    for y in labels.tolist():
        parts, codes = _background(rng, bg, dim)
        if y == 1:
            k = _draw(rng, kc)
            wide_component = rng.random(k) < 0.5
            x = np.where(
                wide_component[:, None], _gauss(rng, 0.0, wide, k, dim), _gauss(rng, shift, 1.0, k, dim)
            ).astype(np.float32)
            parts.append(x)
            codes.append(CONCEPT_A)
        if y == poisoned_class:
            parts.append(_gauss(rng, pmean, pstd, 1, dim))
            codes.append(POISON)
        bags.append((parts, codes))
    meta = _common_meta("single_concept", split, seed, dim, num_bags)
    meta.update(
        algorithm="Algorithm 1: single-concept standard-MIL test",
        assumption="standard (presence): positive iff at least one concept instance",
        **_poison_meta(split, pmean, pstd),
        background=list(bg),
        concept_count=list(kc),
        concept_components=[f"N(0, {wide}^2 I)", f"N({shift}*1, I)"],
    )
    return _finish(bags, labels, rng, name="assumption-single-concept", split=split, meta=meta)


def make_multi_concept_bags(
    split: str = "train",
    seed: int = 0,
    *,
    num_bags: int = 1000,
    dim: int = 16,
    background: int | tuple[int, int] = (1, 9),
    pairs: int | tuple[int, int] = (1, 3),
    concept_means: tuple[float, float] = (2.0, 3.0),
    concept_std: float = 0.1,
    poison_mean: float = -10.0,
    poison_std: float = 0.1,
) -> BagDataset:
    """Two-concept test with a poison shortcut (Raff & Holt 2023, Algorithm 2; torchmil's "multi-concept
    standard MIL").

    A bag is positive iff it holds concept A *and* concept B (threshold-based MIL, threshold 1 each).
    Bag composition (instances shuffled within the bag):

    * every bag: ``n_bg ~ U{background}`` background instances ``N(0, I)``;
    * positive bags: ``m ~ U{pairs}`` instances of concept A ``N(a·1, s² I)`` and ``m`` of concept B
      ``N(b·1, s² I)`` with ``(a, b) = concept_means``, ``s = concept_std``;
    * negative bags: exactly one instance of one concept, A or B with probability 1/2;
    * poison ``N(poison_mean·1, poison_std² I)``: one instance in every negative training bag and every
      positive test bag.

    From the paper via torchmil: all distributions, ``m`` in 1..3 (``randint(1, 4)``), background in 1..9
    (``randint(1, 10)``), the single concept instance of negatives, the poison placement. Our choices:
    ``dim``, ``num_bags``.

    Args:
        split: ``"train"`` or ``"test"``.
        seed: Seed; ``(seed, split)`` seeds a private generator.
        num_bags: Number of bags (>= 2); half positive.
        dim: Instance dimension ``D``.
        background: Inclusive range of background instances per bag (>= 1).
        pairs: Inclusive range of the number ``m`` of A (and of B) instances in a positive bag (>= 1).
        concept_means: Per-coordinate means of concepts A and B.
        concept_std: Standard deviation of both concepts.
        poison_mean: Per-coordinate mean of the poison instance.
        poison_std: Standard deviation of the poison instance.

    Returns:
        A :class:`BagDataset` (see :func:`make_single_concept_bags`).

    Raises:
        ValueError: A bad argument (the message names it).
    """
    seed, num_bags, dim, bg = _check_common(split, seed, num_bags, dim, background)
    pr = _check_range("pairs", pairs, 1)
    means = _check_means(concept_means)
    cstd = _check_positive("concept_std", concept_std)
    pmean = float(poison_mean)
    pstd = _check_positive("poison_std", poison_std)
    rng, labels = _generator_and_labels(split, seed, num_bags, stream=2)
    poisoned_class = 0 if split == "train" else 1
    bags = []
    for y in labels.tolist():
        parts, codes = _background(rng, bg, dim)
        if y == 1:
            m = _draw(rng, pr)
            parts += [_gauss(rng, means[0], cstd, m, dim), _gauss(rng, means[1], cstd, m, dim)]
            codes += [CONCEPT_A, CONCEPT_B]
        else:
            c = int(rng.integers(0, 2))
            parts.append(_gauss(rng, means[c], cstd, 1, dim))
            codes.append(CONCEPT_A + c)
        if y == poisoned_class:
            parts.append(_gauss(rng, pmean, pstd, 1, dim))
            codes.append(POISON)
        bags.append((parts, codes))
    meta = _common_meta("multi_concept", split, seed, dim, num_bags)
    meta.update(
        algorithm="Algorithm 2: two-concept (threshold) MIL test with a poison instance",
        assumption="threshold-based: positive iff at least one instance of concept A and one of concept B",
        **_poison_meta(split, pmean, pstd),
        background=list(bg),
        pairs=list(pr),
        concepts=[f"N({means[0]}*1, {cstd}^2 I)", f"N({means[1]}*1, {cstd}^2 I)"],
    )
    return _finish(bags, labels, rng, name="assumption-multi-concept", split=split, meta=meta)


def make_false_frequency_bags(
    split: str = "train",
    seed: int = 0,
    *,
    num_bags: int = 1000,
    dim: int = 16,
    background: int | tuple[int, int] = (1, 9),
    positive_copies: int | tuple[int, int] = (1, 2),
    train_negative_copies: int | tuple[int, int] = 1,
    test_negative_copies: int | tuple[int, int] = (35, 44),
    concept_means: tuple[float, float] = (2.0, 3.0),
    concept_std: float = 0.1,
) -> BagDataset:
    """False-frequency reliance test (Raff & Holt 2023, Algorithm 3).

    A bag is positive iff it holds concept A *and* concept B. Bag composition (instances shuffled):

    * every bag: ``n_bg ~ U{background}`` background instances ``N(0, I)``;
    * positive bags: ``U{positive_copies}`` instances of A and, independently, of B;
    * negative bags: one concept (A or B, probability 1/2) repeated ``U{train_negative_copies}`` times in
      the training split and ``U{test_negative_copies}`` times in the test split.

    Shortcut: with the defaults every training positive holds >= 2 concept instances and every training
    negative exactly 1, so "how many concept-like instances" separates the training classes perfectly;
    the test negatives hold 35-44, so a model that counts calls them positive (AUC below chance) while a
    model that checks for both concepts is unaffected. There is no poison instance in this test.

    From the paper via torchmil: distributions, background in 1..9, test-negative copies in 35..44
    (``randint(35, 45)``), one copy in training negatives. Read as inclusive because torchmil's literal draw
    is constant: the copies of each concept in positives (``randint(1, 2)``, always 1; here 1..2) and the
    concept of a negative bag (``randint(0, 1)``, always concept A; here A or B). Our choices: ``dim``,
    ``num_bags``.

    Args:
        split: ``"train"`` or ``"test"``.
        seed: Seed; ``(seed, split)`` seeds a private generator.
        num_bags: Number of bags (>= 2); half positive.
        dim: Instance dimension ``D``.
        background: Inclusive range of background instances per bag (>= 1).
        positive_copies: Inclusive range of the copies of each concept in a positive bag (>= 1).
        train_negative_copies: Inclusive range of the copies of the one concept in a training negative.
        test_negative_copies: Inclusive range of the copies of the one concept in a test negative.
        concept_means: Per-coordinate means of concepts A and B.
        concept_std: Standard deviation of both concepts.

    Returns:
        A :class:`BagDataset` (see :func:`make_single_concept_bags`).

    Raises:
        ValueError: A bad argument (the message names it).
    """
    seed, num_bags, dim, bg = _check_common(split, seed, num_bags, dim, background)
    pc = _check_range("positive_copies", positive_copies, 1)
    trn = _check_range("train_negative_copies", train_negative_copies, 1)
    tst = _check_range("test_negative_copies", test_negative_copies, 1)
    means = _check_means(concept_means)
    cstd = _check_positive("concept_std", concept_std)
    rng, labels = _generator_and_labels(split, seed, num_bags, stream=3)
    neg_copies = trn if split == "train" else tst
    bags = []
    for y in labels.tolist():
        parts, codes = _background(rng, bg, dim)
        if y == 1:
            parts += [
                _gauss(rng, means[0], cstd, _draw(rng, pc), dim),
                _gauss(rng, means[1], cstd, _draw(rng, pc), dim),
            ]
            codes += [CONCEPT_A, CONCEPT_B]
        else:
            c = int(rng.integers(0, 2))
            parts.append(_gauss(rng, means[c], cstd, _draw(rng, neg_copies), dim))
            codes.append(CONCEPT_A + c)
        bags.append((parts, codes))
    meta = _common_meta("false_frequency", split, seed, dim, num_bags)
    meta.update(
        algorithm="Algorithm 3: false-frequency reliance test",
        assumption="threshold-based: positive iff at least one instance of concept A and one of concept B",
        shortcut=(
            "the number of concept instances: negatives hold one concept repeated "
            f"{neg_copies[0]}..{neg_copies[1]} times in this split, positives {pc[0]}..{pc[1]} of each concept"
        ),
        background=list(bg),
        positive_copies=list(pc),
        negative_copies=list(neg_copies),
        concepts=[f"N({means[0]}*1, {cstd}^2 I)", f"N({means[1]}*1, {cstd}^2 I)"],
    )
    return _finish(bags, labels, rng, name="assumption-false-frequency", split=split, meta=meta)


def _check_means(value: Any) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"concept_means must be two numbers (mean of A, mean of B), got {value!r}") from e
    if not (np.isfinite(a) and np.isfinite(b)) or a == b:
        raise ValueError(f"concept_means must be two different finite numbers, got {value!r}")
    return a, b


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class AssumptionTest:
    """One algorithmic unit test: its generator, what it tests and how it is passed.

    Attributes:
        name: Registry key.
        generator: ``generator(split, seed, **kwargs) -> BagDataset``.
        algorithm: Which of the paper's algorithms it implements.
        assumption: The MIL assumption a passing model obeys.
        shortcut: The training shortcut and how the test split reverses it.
        chance_auc: Test ROC AUC of a constant or random scorer (0.5).
        chance_accuracy: Test accuracy of a constant scorer on the balanced test split (0.5).
        pass_criterion: The paper's criterion, in words.
    """

    name: str
    generator: Callable[..., BagDataset]
    algorithm: str
    assumption: str
    shortcut: str
    chance_auc: float = _CHANCE_AUC
    chance_accuracy: float = 0.5
    pass_criterion: str = _PASS_CRITERION


ASSUMPTION_TESTS: dict[str, AssumptionTest] = {
    "single_concept": AssumptionTest(
        "single_concept",
        make_single_concept_bags,
        "Algorithm 1 (single-concept standard MIL)",
        "standard (presence): positive iff at least one concept instance",
        "poison instance in every negative training bag, in every positive test bag",
    ),
    "multi_concept": AssumptionTest(
        "multi_concept",
        make_multi_concept_bags,
        "Algorithm 2 (two concepts, both required, poisoned)",
        "threshold: positive iff at least one instance of each of two concepts",
        "poison instance in every negative training bag, in every positive test bag",
    ),
    "false_frequency": AssumptionTest(
        "false_frequency",
        make_false_frequency_bags,
        "Algorithm 3 (false-frequency reliance)",
        "threshold: positive iff at least one instance of each of two concepts",
        "count of concept instances: 1 in training negatives, 35-44 in test negatives",
    ),
}
