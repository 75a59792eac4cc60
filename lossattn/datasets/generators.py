"""Generic MIL bag generator over a labelled pool of instances (MNIST-bags, CIFAR10-bags, digits-bags ...).

The construction follows Ilse et al. (2018) and Shi et al. (2020): a bag's size is
``max(1, round(Normal(mean, std)))``, its instances are drawn at random from the pool, and the bag is
labelled from its content. With target classes ``(t_1, ..., t_k)``:

* instance label = ``j`` if the instance's class is ``t_j``, else 0;
* ``k == 1`` (binary): bag label 1 iff the bag holds an instance of ``t_1``;
* ``k >= 2`` (multi-class): a bag may hold instances of at most one target class; bag label = ``j`` for the
  target class ``t_j`` present, 0 if none.

"Draw at random, redraw bags that hold two different target classes" (rejection sampling) would loop for
ever for large bags (a bag of 50 almost always holds two target classes), so the generator samples the same
distribution directly: it draws the bag's class ``a`` with the probability that a random bag (instances drawn
independently, with replacement) ends up with label ``a`` after rejection, then the number ``m >= 1`` of
target instances from the matching truncated binomial, then ``m`` images of class ``t_a`` and ``n - m``
non-target images (each without replacement within the bag), in random order. For ``k == 1`` this is exactly
the distribution of Ilse et al.'s "draw then label". ``balance=True`` instead draws the bag label uniformly
from ``0 .. k``.

Every generator owns a private ``numpy.random.Generator`` seeded with ``seed``: the same arguments always give
the same bags, whatever else uses the global random state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .bags import BagDataset

__all__ = ["sample_bag_sizes", "make_bags_from_pool", "bags_from_pool_indices"]


def sample_bag_sizes(rng: np.random.Generator, num_bags: int, mean: float, std: float) -> np.ndarray:
    """Draws ``num_bags`` bag sizes ``max(1, round(Normal(mean, std)))``.

    Returns:
        int64 array ``(num_bags,)``.
    """
    if float(std) < 0:
        raise ValueError(f"std_bag_size must be >= 0, got {std}")
    if float(mean) <= 0:
        raise ValueError(f"mean_bag_size must be > 0, got {mean}")
    return np.maximum(1, np.rint(rng.normal(float(mean), float(std), int(num_bags)))).astype(np.int64)


def _label_log_weights(n: int, frac: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """Log-probabilities (unnormalised) that a random bag of ``n`` has label ``0 .. k`` given the
    conflict-rejection rule; ``-inf`` where the pool cannot supply such a bag."""
    k = frac.shape[0] - 1
    p0 = frac[0]
    out = np.full(k + 1, -np.inf)
    with np.errstate(divide="ignore"):
        if group_sizes[0] >= n:
            out[0] = n * np.log(p0)
        for a in range(1, k + 1):
            if group_sizes[a] < 1 or group_sizes[a] + group_sizes[0] < n:
                continue
            s = p0 + frac[a]
            ratio = p0 / s
            out[a] = n * np.log(s) + (np.log1p(-(ratio**n)) if ratio < 1 else -np.inf)
    return out


def _target_count_probs(n: int, q: float, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Support ``lo..hi`` and probabilities of Binomial(n, q) truncated to that range."""
    from scipy.stats import binom

    support = np.arange(lo, hi + 1)
    logp = binom.logpmf(support, n, q)
    p = np.exp(logp - logp.max())
    return support, p / p.sum()


def make_bags_from_pool(
    images: Any,
    labels: Any,
    num_bags: int,
    target_classes: Sequence[int] = (9,),
    mean_bag_size: float = 10.0,
    std_bag_size: float = 2.0,
    seed: int = 0,
    *,
    balance: bool = False,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    name: str = "bags",
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
    pool_ids: Any = None,
) -> BagDataset:
    """Draws MIL bags from a labelled pool of instances.

    Args:
        images: Pool ``(P, *instance_shape)``: a numpy array / tensor, or any object with ``len()`` and
            ``obj[int_array] -> array`` (only the images used are gathered). uint8 pixels are divided by 255.
        labels: Class of each pool image, int ``(P,)``.
        num_bags: Number of bags ``B``.
        target_classes: Target classes ``(t_1, ..., t_k)``, distinct; see the module doc for the label rules.
        mean_bag_size: Mean of the bag-size normal.
        std_bag_size: Standard deviation of the bag-size normal.
        seed: Seed of the private generator.
        balance: Draw bag labels uniformly from ``0 .. k`` instead of from the random-draw distribution.
        normalize: Optional ``(mean, std)`` per channel (dim 1 of the instance), applied after the /255.
        name: Dataset name.
        split: Split tag stored in ``meta`` and used in bag names (``"train-00000"``).
        class_names: Names of the ``k + 1`` bag classes (default ``["none", "t_1", ...]``).
        meta: Extra provenance merged into ``meta``.
        pool_ids: Optional int ``(P,)`` ids of the pool images (e.g. positions in a larger source); they become
            the ``source_index`` of the instances instead of the pool positions.

    Returns:
        A :class:`BagDataset` of ``B`` bags with ``num_classes = k + 1``, instance labels ``0 .. k`` and
        ``source_index`` = the pool position (or ``pool_ids`` entry) of every instance.

    Raises:
        ValueError: Bad arguments (no/duplicate targets, a target absent from the pool, pool too small).
    """
    pool_labels = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels).astype(np.int64)
    pool_labels = pool_labels.ravel()
    n_pool = pool_labels.shape[0]
    if len(images) != n_pool:
        raise ValueError(f"{name}: {len(images)} images but {n_pool} labels")
    targets = tuple(int(t) for t in target_classes)
    if not targets:
        raise ValueError(f"{name}: target_classes must hold at least one class")
    if len(set(targets)) != len(targets):
        raise ValueError(f"{name}: target_classes {targets} has duplicates")
    present = set(np.unique(pool_labels).tolist())
    absent = [t for t in targets if t not in present]
    if absent:
        raise ValueError(f"{name}: target class(es) {absent} do not occur in the pool (classes {sorted(present)})")
    if int(num_bags) < 1:
        raise ValueError(f"{name}: num_bags must be >= 1, got {num_bags}")
    k = len(targets)
    inst_of_pool = np.zeros(n_pool, dtype=np.int64)
    for j, t in enumerate(targets, start=1):
        inst_of_pool[pool_labels == t] = j
    groups = [np.flatnonzero(inst_of_pool == j) for j in range(k + 1)]
    group_sizes = np.array([g.size for g in groups], dtype=np.int64)
    frac = group_sizes / n_pool

    rng = np.random.default_rng(seed)
    sizes = sample_bag_sizes(rng, int(num_bags), mean_bag_size, std_bag_size)
    weight_cache: dict[int, np.ndarray] = {}
    count_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    bag_labels = np.empty(int(num_bags), dtype=np.int64)
    parts: list[np.ndarray] = []
    for i, n in enumerate(sizes.tolist()):
        if n not in weight_cache:
            logw = _label_log_weights(n, frac, group_sizes)
            if balance:
                logw = np.where(np.isfinite(logw), 0.0, -np.inf)
            if not np.isfinite(logw).any():
                raise ValueError(
                    f"{name}: cannot draw a bag of {n} instances from a pool with {group_sizes[0]} non-target "
                    f"and {group_sizes[1:].tolist()} target images"
                )
            w = np.exp(logw - logw[np.isfinite(logw)].max())
            weight_cache[n] = w / w.sum()
        a = int(rng.choice(k + 1, p=weight_cache[n]))
        if a == 0:
            idx = rng.choice(groups[0], n, replace=False)
        else:
            key = (n, a)
            if key not in count_cache:
                q = frac[a] / (frac[0] + frac[a])
                lo, hi = max(1, n - int(group_sizes[0])), min(n, int(group_sizes[a]))
                count_cache[key] = _target_count_probs(n, q, lo, hi)
            support, probs = count_cache[key]
            m = int(rng.choice(support, p=probs))
            idx = np.concatenate([rng.choice(groups[a], m, replace=False), rng.choice(groups[0], n - m, replace=False)])
            idx = idx[rng.permutation(n)]
        bag_labels[i] = a
        parts.append(idx.astype(np.int64))

    flat = np.concatenate(parts)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if class_names is None:
        class_names = ["none"] + [str(t) for t in targets]
    info = {
        "seed": seed,
        "target_classes": list(targets),
        "mean_bag_size": float(mean_bag_size),
        "std_bag_size": float(std_bag_size),
        "balance": bool(balance),
        "pool_size": int(n_pool),
    }
    info.update(meta or {})
    return bags_from_pool_indices(
        images,
        flat,
        offsets,
        bag_labels,
        inst_of_pool[flat],
        num_classes=k + 1,
        normalize=normalize,
        name=name,
        split=split,
        class_names=class_names,
        meta=info,
        pool_ids=pool_ids,
    )


def bags_from_pool_indices(
    images: Any,
    pool_indices: Any,
    offsets: Any,
    bag_labels: Any,
    instance_labels: Any = None,
    *,
    num_classes: int | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    name: str = "bags",
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
    pool_ids: Any = None,
) -> BagDataset:
    """Builds a :class:`BagDataset` from bags given as indices into an image pool (the storage step of every
    generator; write a new generator by choosing indices and labels, then calling this).

    Only the pool images used are gathered, once, and kept in their original dtype (uint8 pixels stay uint8,
    a quarter of float32); decoding to float32 and normalisation happen when a bag is read.

    Args:
        images: Pool ``(P, *instance_shape)`` (array, tensor, or object with ``len()`` and ``obj[int_array]``).
            uint8 pixels are divided by 255.
        pool_indices: int ``(N,)`` pool index of every instance, bag after bag.
        offsets: int ``(B + 1,)`` CSR offsets into ``pool_indices``.
        bag_labels: int ``(B,)``.
        instance_labels: Optional int ``(N,)`` (``-1`` = unknown).
        num_classes: Number of bag classes (default ``max(2, max label + 1)``).
        normalize: Optional ``(mean, std)`` per channel (dim 1 of the instance), applied after the /255.
        name: Dataset name.
        split: Split tag stored in ``meta["split"]`` and used in bag names (``"train-00000"``).
        class_names: Optional class names.
        meta: Provenance stored in ``meta``.
        pool_ids: Optional int ``(P,)`` ids of the pool images, stored as ``source_index`` instead of the
            pool positions.

    Returns:
        The dataset; ``source_index`` = pool position (or ``pool_ids`` entry) of each instance.
    """
    flat = np.asarray(pool_indices, dtype=np.int64).ravel()
    offsets = np.asarray(offsets, dtype=np.int64).ravel()
    uniq, inv = np.unique(flat, return_inverse=True)
    gathered = images[uniq]
    data = gathered.detach().cpu() if isinstance(gathered, torch.Tensor) else torch.from_numpy(np.array(gathered))
    if data.dtype != torch.uint8:
        data = data.to(torch.float32)
    instance_shape = tuple(data.shape[1:])
    scale = shift = None
    if data.dtype == torch.uint8 or normalize is not None:
        base = 1.0 / 255.0 if data.dtype == torch.uint8 else 1.0
        channels = instance_shape[0] if instance_shape else 1
        mean_c = torch.zeros(channels) if normalize is None else torch.as_tensor(normalize[0], dtype=torch.float64)
        std_c = torch.ones(channels) if normalize is None else torch.as_tensor(normalize[1], dtype=torch.float64)
        view = (-1,) + (1,) * max(len(instance_shape) - 1, 0)
        scale = (base / std_c.double()).reshape(view).expand(instance_shape).to(torch.float32).contiguous()
        shift = (-mean_c.double() / std_c.double()).reshape(view).expand(instance_shape).to(torch.float32)
        shift = shift.contiguous()
    info = {"split": split}
    info.update(meta or {})
    prefix = split or "bag"
    return BagDataset._from_storage(
        data=data,
        rows=torch.from_numpy(inv.astype(np.int64).ravel()),
        offsets=offsets,
        labels=bag_labels,
        instance_labels=instance_labels,
        names=[f"{prefix}-{i:05d}" for i in range(offsets.shape[0] - 1)],
        num_classes=num_classes,
        name=name,
        class_names=class_names,
        meta=info,
        source_index=flat if pool_ids is None else np.asarray(pool_ids, dtype=np.int64)[flat],
        scale=scale,
        shift=shift,
    )
