"""Exact attention scoring of one bag too large for memory, streamed from disk in chunks.

A bag of ``n`` instances is read ``chunk_size`` instances at a time (from a ``.npy`` file, an array or
memmap, or any iterable of chunks). Each chunk goes through the model's feature extractor and the
instance scores are folded into an *online softmax* (the running maximum, the running normaliser
``Σ exp(s_t − m)`` and the running weighted feature sum ``Σ exp(s_t − m) h_t``, rescaled whenever the
maximum grows), so the bag embedding ``Σ α_t h_t`` and the bag logits are exact while only one chunk of
features and activations is ever in memory. The instance scores ``s_t`` (4 bytes per instance) are kept, so
the weights ``α_t = exp(s_t − m) / Σ`` come out exactly as in the dense computation.

For loss-based attention (Shi et al. 2020, Sec. 3) the score is ``s_t = logsumexp_c z_tc`` of the shared classifier's
instance logits; for (gated) attention it is the attention network's score. The result is the
:class:`~lossattn.models.output.MILOutput` the model would return for ``x[None]`` (batch of one bag).

Reading a path uses plain file reads into one reusable buffer, so the resident memory stays at about one
chunk (plus the weights) however large the file; slicing a ``np.memmap`` instead maps the file's pages
into the process and they count as resident memory until the kernel drops them.

    >>> out = score_bag("bag.npy", model, chunk_size=65536)  # doctest: +SKIP
    >>> out.bag_logits, out.weights  # (1, K), (1, n)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn.models.bag import AttentionMIL, LossAttentionMIL
from lossattn.models.output import MILOutput

__all__ = ["score_bag", "NpyChunks", "OnlineSoftmaxPool"]


class NpyChunks:
    """Iterate over the rows of a 2-D (or higher) ``.npy`` file in chunks, with plain reads into one buffer.

    Args:
        path: the ``.npy`` file (C order).
        chunk_size: rows per chunk.

    Each yielded array is a view of the same buffer, valid until the next iteration step.
    """

    def __init__(self, path: str | Path, chunk_size: int = 65536) -> None:
        self.path = Path(path)
        self.chunk_size = int(chunk_size)
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        # a memmap only to read the header (shape, dtype, order, data offset); no data page is touched
        header = np.load(self.path, mmap_mode="r")
        shape, dtype, self.offset = header.shape, header.dtype, int(header.offset)
        fortran = header.ndim > 1 and not header.flags.c_contiguous
        del header
        if fortran:
            raise ValueError(f"{self.path}: Fortran-ordered arrays cannot be streamed by rows; save it in C order")
        if len(shape) < 2:
            raise ValueError(f"{self.path}: expected an array of instances (n, ...), got shape {shape}")
        if dtype.hasobject:
            raise ValueError(f"{self.path}: object arrays are not supported")
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        n, rest = self.shape[0], self.shape[1:]
        buf = np.empty((min(self.chunk_size, max(n, 1)), *rest), dtype=self.dtype)
        raw = buf.reshape(-1).view(np.uint8)
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset)
            for start in range(0, n, self.chunk_size):
                rows = min(self.chunk_size, n - start)
                want = rows * self.row_bytes
                view = memoryview(raw)[:want]
                got = 0
                while got < want:
                    k = fh.readinto(view[got:])
                    if not k:
                        raise ValueError(f"{self.path}: file ends after {start + got // self.row_bytes} rows")
                    got += k
                yield buf[:rows]


def _chunks(source: Any, chunk_size: int) -> Iterator[Any]:
    if isinstance(source, (str, Path)):
        yield from NpyChunks(source, chunk_size)
    elif isinstance(source, (np.ndarray, Tensor)):
        for start in range(0, source.shape[0], chunk_size):
            yield source[start : start + chunk_size]
    elif isinstance(source, Iterable):
        yield from source
    else:
        raise TypeError(f"source must be a .npy path, an array/tensor or an iterable of chunks, got {type(source)}")


class OnlineSoftmaxPool:
    """Running ``softmax``-weighted sum over chunks: ``Σ_t softmax(s)_t h_t`` without holding all ``h``.

    Call :meth:`update` with each chunk's scores ``(m,)`` and features ``(m, D)``; :attr:`embedding` is
    ``Σ_t α_t h_t`` over everything seen and :meth:`weights` the ``α_t`` of all instances (from the kept
    scores). Accumulation is in float64.
    """

    def __init__(self) -> None:
        self.max = -math.inf
        self.norm: Tensor | None = None  # Σ exp(s_t − max), float64 scalar
        self.acc: Tensor | None = None  # Σ exp(s_t − max) h_t, float64 (D,)
        self.scores: list[Tensor] = []

    def update(self, scores: Tensor, features: Tensor) -> None:
        scores = scores.detach().reshape(-1)
        if scores.numel() == 0:
            return
        if not bool(torch.isfinite(scores).all()):
            raise ValueError("non-finite instance scores: check the features (NaN/inf) and the model")
        self.scores.append(scores.float().cpu())
        s = scores.double()
        new_max = max(self.max, float(s.max()))
        e = torch.exp(s - new_max)  # (m,)
        part = e @ features.detach().double()  # (D,)
        if self.acc is None:
            self.norm, self.acc = e.sum(), part
        else:
            scale = math.exp(self.max - new_max)  # ≤ 1: rescale what was accumulated under the old maximum
            self.norm = self.norm * scale + e.sum()
            self.acc = self.acc * scale + part
        self.max = new_max

    @property
    def embedding(self) -> Tensor:
        if self.acc is None or self.norm is None:
            raise ValueError("the bag has no instances")
        return self.acc / self.norm

    def weights(self) -> Tensor:
        """``α_t`` of every instance seen, float64 ``(n,)``."""
        if self.norm is None:
            raise ValueError("the bag has no instances")
        s = torch.cat(self.scores).double()
        return torch.exp(s - self.max) / self.norm


@torch.no_grad()
def score_bag(
    source: Any,
    model: LossAttentionMIL | AttentionMIL,
    *,
    chunk_size: int = 65536,
    transform: Callable[[Tensor], Tensor] | None = None,
    device: str | torch.device = "cpu",
    instance_logits: bool = False,
) -> MILOutput:
    """Score one bag streamed in chunks: the model's output for ``x[None]``, computed exactly chunk by chunk.

    Args:
        source: the bag's instances ``(n, *instance_shape)``: a ``.npy`` path (read with plain file reads,
            see :class:`NpyChunks`), an array / ``np.memmap`` / tensor (sliced), or an iterable of chunks.
        model: a :class:`~lossattn.models.bag.LossAttentionMIL` or :class:`~lossattn.models.bag.AttentionMIL`
            (evaluated in eval mode; its train/eval state is restored afterwards).
        chunk_size: instances per chunk (for a path or an array).
        transform: applied to every chunk before the model (e.g. the fitted
            :class:`~lossattn.datasets.Standardizer` of the training bags).
        device: where the model runs.
        instance_logits: also return the instance logits ``(1, n, K)`` (loss-based attention only;
            ``n · K`` floats).

    Returns:
        :class:`MILOutput` with ``bag_logits (1, K)``, ``weights (1, n)`` (float32) and, if asked,
        ``instance_logits``.
    """
    if not isinstance(model, (LossAttentionMIL, AttentionMIL)):
        raise TypeError(f"streamed scoring supports LossAttentionMIL and AttentionMIL, got {type(model).__name__}")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    pool = OnlineSoftmaxPool()
    logits_parts: list[Tensor] = []
    la = isinstance(model, LossAttentionMIL)
    try:
        for chunk in _chunks(source, chunk_size):
            if not isinstance(chunk, Tensor):
                chunk = np.asarray(chunk)
                if not chunk.flags.writeable:  # a memmap slice: copy this chunk (torch wants writable memory)
                    chunk = chunk.copy()
                chunk = torch.from_numpy(chunk)
            x = chunk.to(device=device, dtype=torch.float32)
            if transform is not None:
                x = transform(x)
            if x.shape[0] == 0:
                continue
            h = model.extractor(x)  # (m, D)
            if la:
                z = model.classifier(h)  # (m, K)
                s = torch.logsumexp(z, dim=-1)
                if instance_logits:
                    logits_parts.append(z.float().cpu())
            else:
                s = model.attention.scores(h.unsqueeze(0)).squeeze(0)
            pool.update(s, h)
        emb = pool.embedding.to(device=device, dtype=torch.float32)
        classifier = model.classifier
        bag_logits = classifier(emb.unsqueeze(0))  # (1, K)
        weights = pool.weights().float().unsqueeze(0)
    finally:
        model.train(was_training)
    inst = torch.cat(logits_parts).unsqueeze(0) if logits_parts else None
    return MILOutput(bag_logits.cpu(), weights, inst, model.head)
