"""A bag's instances through a model in chunks, with recomputation: the exact loss and gradients in one chunk's memory.

An attention model's output depends on the instances only through a few numbers per instance, because the
weights sum to one and the layer after the pooling is linear::

    loss-based attention (Shi et al. 2020):  u_t = z_t = W h_t + b                 (K logits)
        s_t = logsumexp_c z_tc,  α = softmax(s),  bag logits = W (Σ_t α_t h_t) + b = Σ_t α_t z_t
    (gated) attention (Ilse et al. 2018):    u_t = (a_t, y_t = W_c h_t + b_c)      (1 + K numbers)
        α = softmax(a),  bag logits = W_c (Σ_t α_t h_t) + b_c = Σ_t α_t y_t

with ``h_t = f(x_t)`` the extractor's features. :func:`chunked_instance_outputs` computes ``u_t`` for
``chunk`` instances at a time, each chunk under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): the
autograd graph keeps only the chunk's input (a view of the bag) and its ``(m, K')`` outputs, and the chunk's
activations (``h`` and the extractor's hidden layers) are recomputed in the backward pass, with the RNG state
of the forward pass, so dropout masks agree between the two. The pooling and the loss then run on the
``(B, N, K')`` outputs as usual. The loss and every gradient equal those of the in-memory computation up to
float rounding (the sums are the same, only the blocking of the matrix products differs); memory is one
chunk's activations plus ``N · K'`` numbers, at the cost of one more extractor forward pass per step.

With dropout, the masks are drawn chunk by chunk, so they differ from the masks of the unchunked forward pass
(the same distribution; a run is still reproducible). Without gradients (evaluation) the chunks are simply
run one after the other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

__all__ = ["chunked_instance_outputs"]


def chunked_instance_outputs(fn: Callable[[Tensor], Tensor], x: Tensor, mask: Tensor | None, chunk: int) -> Tensor:
    """``fn`` applied to the real instances of ``x``, ``chunk`` rows at a time, scattered to ``(B, N, K')``.

    Args:
        fn: per-instance map ``(m, *instance_shape)`` → ``(m, K')`` (extractor and the per-instance head); it
            must treat rows independently (no batch statistics).
        x: ``(B, N, *instance_shape)`` bags.
        mask: ``(B, N)`` bool, True = real instance; None when there is no padding.
        chunk: instances per chunk (>= 1).

    Returns:
        ``(B, N, K')``: ``fn``'s outputs at the real positions, 0 at padding.

    Raises:
        ValueError: ``chunk`` is not a positive integer.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"instance_chunk must be a positive integer (instances per chunk), got {chunk!r}")
    B, N = x.shape[:2]
    real = x.reshape(B * N, *x.shape[2:]) if mask is None else x[mask]  # (M, ...) real instances
    M = real.shape[0]
    grad = torch.is_grad_enabled()
    parts = []
    for start in range(0, M, chunk):
        part = real[start : start + chunk]
        # checkpoint keeps the chunk's input and output only; its activations are recomputed in backward
        parts.append(checkpoint(fn, part, use_reentrant=False) if grad else fn(part))
    u = torch.cat(parts) if len(parts) > 1 else parts[0]  # (M, K')
    if mask is None:
        return u.reshape(B, N, -1)  # (B, N, K')
    return u.new_zeros((B, N, u.shape[-1])).index_put((mask,), u)  # (B, N, K'), 0 at padding
