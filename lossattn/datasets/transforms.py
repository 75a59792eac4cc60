"""Feature standardisation, fitted on training bags only (a pipeline step, never part of a loader)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .bags import BaseBagDataset

__all__ = ["Standardizer"]


class Standardizer:
    """Per-feature standardisation ``(x - mean) / std`` over the instances of the training bags.

    Statistics are computed in float64 over every instance of the dataset given to :meth:`fit` (pass the
    training bags only; never the test fold), in one streaming pass: one bag is in memory at a time, and its
    float64 temporaries are bounded by ``row_block`` rows. The standard deviation is the population one
    (``ddof=0``); features that are constant on the training bags get ``std = 1`` (they are only centred).

    :meth:`transform` returns a dataset sharing the original storage (no feature copy); it works for
    in-memory and lazy datasets alike. For images the statistics are per pixel position and channel.

    Args:
        eps: A feature counts as constant when ``std <= eps * max(1, |mean|)``.
        row_block: Most rows of a bag converted to float64 at once in :meth:`fit` (bounds the temporaries of a
            huge bag, e.g. a 100,000-patch slide, to ``row_block * D * 16`` bytes).

    Example:
        >>> train, test = ds.subset(tr_idx), ds.subset(te_idx)  # doctest: +SKIP
        >>> std = Standardizer().fit(train)                     # doctest: +SKIP
        >>> train, test = std.transform(train), std.transform(test)  # doctest: +SKIP
    """

    def __init__(self, eps: float = 1e-8, row_block: int = 8192) -> None:
        self.eps = float(eps)
        if int(row_block) < 1:
            raise ValueError(f"row_block must be >= 1, got {row_block}")
        self.row_block = int(row_block)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.num_instances: int = 0
        self.instance_shape: tuple[int, ...] = ()

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` or :meth:`load_state_dict` has been called."""
        return self.mean is not None

    def fit(self, dataset: BaseBagDataset) -> Standardizer:
        """Computes per-feature mean and std over all instances of ``dataset``, one bag at a time.

        Each block of at most ``row_block`` rows of a bag gets its float64 mean and sum of squared deviations
        ``M2``; blocks are merged with the parallel-variance update of Chan, Golub & LeVeque (1979):
        ``delta = mean_b - mean``, ``mean += delta * n_b / n``, ``M2 += M2_b + delta^2 * n_a * n_b / n`` with
        ``n = n_a + n_b``. Bags are never concatenated, so memory is bounded by the largest bag (float32, as
        the dataset returns it) plus the block temporaries, whatever the number of bags.

        Args:
            dataset: The training bags.

        Returns:
            ``self``.
        """
        count = 0
        mean: np.ndarray | None = None
        m2: np.ndarray | None = None
        for i in range(len(dataset)):
            x, _ = dataset._load(i)
            flat = x.reshape(x.shape[0], -1)  # (n_i, D)
            for start in range(0, flat.shape[0], self.row_block):
                block = np.asarray(flat[start : start + self.row_block], dtype=np.float64)  # (m, D)
                n_b = block.shape[0]
                mean_b = block.mean(axis=0)
                block -= mean_b
                np.square(block, out=block)
                m2_b = block.sum(axis=0)
                del block
                if mean is None or m2 is None:
                    mean, m2, count = mean_b, m2_b, n_b
                    continue
                total = count + n_b
                delta = mean_b - mean
                mean = mean + delta * (n_b / total)
                m2 = m2 + m2_b + delta**2 * (count * n_b / total)
                count = total
            del x, flat
        if mean is None or m2 is None:
            raise ValueError(f"cannot fit a Standardizer on dataset '{dataset.name}': it has no instances")
        std = np.sqrt(m2 / count)
        std = np.where(std <= self.eps * np.maximum(1.0, np.abs(mean)), 1.0, std)
        self.mean = torch.from_numpy(mean.astype(np.float32))
        self.std = torch.from_numpy(std.astype(np.float32))
        self.num_instances = int(count)
        self.instance_shape = tuple(dataset.instance_shape)
        return self

    def _require(self, num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer is not fitted: call fit(train_dataset) or load_state_dict() first")
        if self.mean.numel() != num_features:
            raise ValueError(
                f"Standardizer was fitted on {self.mean.numel()} features, got data with {num_features} features"
            )
        return self.mean, self.std

    def transform(self, dataset: BaseBagDataset) -> BaseBagDataset:
        """Returns ``dataset`` with standardised instances (same type: in-memory stays in-memory, lazy stays
        lazy; storage is shared).

        Raises:
            RuntimeError: Not fitted.
            ValueError: Feature width differs from the fitted one.
        """
        mean, std = self._require(dataset.num_features)
        out = dataset._with_affine(1.0 / std, -mean / std)
        out.meta["standardized"] = True
        return out

    def fit_transform(self, dataset: BaseBagDataset) -> BaseBagDataset:
        """``fit(dataset)`` then ``transform(dataset)``."""
        return self.fit(dataset).transform(dataset)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Standardises a tensor ``(..., *instance_shape)`` (e.g. a padded batch ``(B, N, D)`` or a bag ``(n, D)``).

        Padded zeros are transformed too; keep using the mask.

        Returns:
            float32 tensor of the same shape.
        """
        mean, std = self._require(self.mean.numel() if self.mean is not None else 0)
        shape = self.instance_shape
        if tuple(x.shape[x.ndim - len(shape) :]) != shape:
            raise ValueError(
                f"cannot standardise a tensor of shape {tuple(x.shape)}: its trailing dimensions must be the "
                f"fitted instance shape {shape}"
            )
        flat = x.reshape(*x.shape[: x.ndim - len(shape)], -1).to(torch.float32)
        return ((flat - mean.to(x.device)) / std.to(x.device)).reshape(x.shape)

    def state_dict(self) -> dict[str, Any]:
        """Returns ``{"mean": (D,) float32, "std": (D,) float32, "eps", "num_instances", "instance_shape"}``."""
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer is not fitted: nothing to save")
        return {
            "mean": self.mean.clone(),
            "std": self.std.clone(),
            "eps": self.eps,
            "num_instances": self.num_instances,
            "instance_shape": list(self.instance_shape),
        }

    def load_state_dict(self, state: dict[str, Any]) -> Standardizer:
        """Restores a state produced by :meth:`state_dict`; returns ``self``."""
        mean = torch.as_tensor(state["mean"], dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(state["std"], dtype=torch.float32).reshape(-1)
        if mean.shape != std.shape:
            raise ValueError(f"mean and std have different shapes {tuple(mean.shape)} vs {tuple(std.shape)}")
        if not bool(torch.isfinite(mean).all() and (std > 0).all()):
            raise ValueError("invalid Standardizer state: mean must be finite and std > 0")
        self.mean, self.std = mean, std
        self.eps = float(state.get("eps", self.eps))
        self.num_instances = int(state.get("num_instances", 0))
        self.instance_shape = tuple(int(v) for v in state.get("instance_shape", [mean.numel()]))
        if int(np.prod(self.instance_shape)) != mean.numel():
            raise ValueError(f"instance_shape {self.instance_shape} does not match {mean.numel()} features")
        return self
