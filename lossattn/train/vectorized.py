"""Many independent one-bag-per-step runs trained as ONE batched computation.

The classic-MIL protocol (Table 1) repeats a tiny training run hundreds of times: 10 folds × 5 repeats ×
100 epochs, one bag per optimiser step, an MLP of ~100k parameters. Run alone, each step costs a few
milliseconds of Python and autograd overhead for a few microseconds of arithmetic. This engine trains
``R`` such runs of the same method on the same dataset at once:

* the parameters of the ``R`` runs are stacked along a leading run dimension (2-D weights transposed,
  ``W1: (R, D_in, 256)``, ...) and every run starts from exactly the parameters the
  :class:`~lossattn.train.Trainer` would give it (the caller builds each run's model under
  ``torch.manual_seed(run seed)``);
* at step ``t`` run ``r`` takes bag ``t`` of *its own* epoch order
  (``np.random.default_rng([seed_r, epoch]).permutation(n_r)``, as the Trainer); the bags of the runs
  are zero-padded to a common size with a mask (padding gets weight exactly 0 and contributes nothing to
  any loss or gradient), and the forward pass is a handful of ``bmm`` calls over the run dimension;
* the loss is the *sum* of the runs' per-bag losses, so each run's gradient is its own. The backward pass
  is written out by hand (:func:`_loss_and_grads`; tested against autograd) so that the ~R×100k weight
  gradients land in persistent buffers instead of fresh allocations every step;
* Adam is ``torch._fused_adam_`` (the kernel the Trainer's ``fused=True`` Adam runs) on the runs' slices
  of the stacked tensors, with one step count per run (runs with equally many training bags share it),
  so it is the same update as ``torch.optim.Adam`` with L2 ``weight_decay``; when an epoch has more steps
  than a run has bags, that run is inactive for the remaining steps and gets no update at all;
* dropout masks come from one generator per run, ``np.random.default_rng([run seed, 0xD40])``, and are
  drawn for the run's real instances only, so a run's result does not depend on which other runs share
  its group (they are not the Trainer's dropout masks: with dropout > 0 the engine is a different, equally
  valid random draw; with dropout 0 it reproduces the Trainer to float rounding);
* after every epoch all runs are evaluated on their validation bags (and, with ``TrainConfig.oracle``,
  their test bags) in batched no-grad passes (runs with similar numbers of instances together); each run keeps the parameters of its epoch with the lowest
  validation error, ties broken by the lowest validation loss (the Trainer's rule,
  :func:`lossattn.train.trainer._better`). Test bags only feed the labelled per-epoch "oracle" figure;
  they never influence selection;
* at the end every run's model gets its selected parameters back and is evaluated with the ordinary
  :func:`~lossattn.train.trainer.evaluate`, so the reported metrics come from the same code as the
  Trainer's.

When the runs' bags at a step differ a lot in size (MUSK2: 1 to 1,044 instances), the MLP does not pad
every bag to the longest: the first rows of all runs go through it as one dense batch, the further rows
only for the runs whose bags are that long (:meth:`VectorizedTrainer._levels`).

Supported: ``LossAttentionMIL`` (any λ, ``"mean"``/``"sum"`` reduction) and ``AttentionMIL`` with the
softmax head (plain and gated), each on the MLP extractor; one bag per step (``batch_size=1``), no
temporal ensemble, no gradient clipping, no AMP. :func:`unsupported_reason` says why a model/config
is not supported; :func:`lossattn.train.protocols.run_experiment` with ``engine="auto"`` then uses the
per-run Trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossattn import functional as LF
from lossattn.nn.extractors import MLPExtractor
from lossattn.nn.models import AttentionMIL, LossAttentionMIL, MILModel
from lossattn.train.config import TrainConfig
from lossattn.train.trainer import FitResult, _better, epoch_schedule, evaluate, flush_denormals

__all__ = ["VectorizedTrainer", "unsupported_reason", "SUPPORTED_MODELS"]

#: registered model names the engine can train (with the MLP extractor)
SUPPORTED_MODELS = ("loss_attention", "attention", "gated_attention")


def unsupported_reason(model: nn.Module, config: TrainConfig) -> str | None:
    """None when :class:`VectorizedTrainer` can train ``model`` with ``config``, else why not."""
    if config.batch_size != 1:
        return f"batch_size={config.batch_size} (the vectorized engine trains one bag per step)"
    if config.consistency_weight > 0:
        return "the temporal-ensemble consistency cost (consistency_weight > 0) is not vectorized"
    if config.grad_clip:
        return "gradient clipping is not vectorized"
    if config.amp:
        return "AMP is not vectorized"
    if type(model) is LossAttentionMIL:
        pass
    elif type(model) is AttentionMIL:
        if model.head != "softmax":
            return f"AttentionMIL with the {model.head!r} head is not vectorized (softmax head only)"
    else:
        return f"model {type(model).__name__} is not vectorized (supported: LossAttentionMIL, AttentionMIL)"
    ext = getattr(model, "extractor", None)
    if type(ext) is not MLPExtractor:
        return f"extractor {type(ext).__name__} is not vectorized (MLP extractor only)"
    mods = list(ext.net)
    if len(mods) % 3 or not all(
        isinstance(a, nn.Linear) and isinstance(b, nn.ReLU) and isinstance(c, nn.Dropout)
        for a, b, c in zip(mods[::3], mods[1::3], mods[2::3], strict=True)
    ):
        return "the MLP extractor is not a stack of Linear-ReLU-Dropout blocks"
    if len({float(m.p) for m in mods[2::3]}) != 1:
        return "the MLP extractor's dropout probabilities differ between layers"
    return None


# --------------------------------------------------------------------------- architecture


@dataclass
class _Arch:
    """What the batched forward needs to know about the (identical) architecture of the runs."""

    kind: str  # "loss_attention" | "attention"
    names: list[str]  # parameter names, in model.named_parameters() order
    layers: list[tuple[str, str]]  # MLP (weight, bias) names
    dropout: float
    widths: list[int]  # MLP layer widths
    lam: float = 0.0
    reduction: str = "mean"
    gated: bool = False
    num_classes: int = 2


def _arch(model: MILModel) -> _Arch:
    names = [n for n, _ in model.named_parameters()]
    mods = list(model.extractor.net)
    layers = [(f"extractor.net.{3 * i}.weight", f"extractor.net.{3 * i}.bias") for i in range(len(mods) // 3)]
    widths = [int(m.out_features) for m in mods[::3]]
    dropout = float(mods[2].p)
    if isinstance(model, LossAttentionMIL):
        return _Arch(
            "loss_attention",
            names,
            layers,
            dropout,
            widths,
            lam=model.lam,
            reduction=model.reduction,
            num_classes=model.num_classes,
        )
    return _Arch(
        "attention", names, layers, dropout, widths, gated=model.attention.U is not None, num_classes=model.num_classes
    )


# Parameters are stacked per name with a leading run dim; 2-D weights are stored transposed, ``(k, in, out)``,
# so that every product is a plain ``bmm`` and every weight gradient is written contiguously.


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """Per-run linear layer: ``x (k, N, in)``, ``w (k, in, out)``, ``b (k, out)`` → ``(k, N, out)``."""
    if b is None:
        return torch.bmm(x, w)
    return torch.baddbmm(b.unsqueeze(1), x, w)


def _mlp(arch: _Arch, p: dict[str, Tensor], x: Tensor, drop: list[Tensor] | None) -> Tensor:
    h = x
    for i, (wn, bn) in enumerate(arch.layers):
        h = _linear(h, p[wn], p[bn]).relu_()
        if drop is not None:
            h = h * drop[i]
    return h


def _attention_scores(arch: _Arch, p: dict[str, Tensor], h: Tensor) -> Tensor:
    a = _linear(h, p["attention.V.weight"], p["attention.V.bias"]).tanh()
    if arch.gated:
        a = a * _linear(h, p["attention.U.weight"], p["attention.U.bias"]).sigmoid()
    return torch.bmm(a, p["attention.w.weight"]).squeeze(-1)  # (k, N)


def _classifier_names(arch: _Arch) -> tuple[str, str]:
    if arch.kind == "loss_attention":
        return "attention.classifier.weight", "attention.classifier.bias"
    return "classifier.weight", "classifier.bias"


def _classifier(arch: _Arch, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    wn, bn = _classifier_names(arch)
    return p[wn], p[bn]


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    # -inf at padding: exp gives exactly 0 there (every bag has a real instance)
    return torch.softmax(scores.masked_fill(~mask, -math.inf), dim=1)


def _train_loss(
    arch: _Arch, p: dict[str, Tensor], x: Tensor, mask: Tensor, y: Tensor, n: Tensor, drop: list[Tensor] | None
) -> Tensor:
    """Per-run loss ``(k,)`` of one bag per run, by autograd-friendly ops (the reference of :func:`_loss_and_grads`).

    ``x (k, N, D)``, ``mask (k, N)``, ``y (k,)`` labels, ``n (k,)`` bag sizes, ``drop`` per-layer scaled masks.
    """
    h = _mlp(arch, p, x, drop)  # (k, N, H)
    w, b = _classifier(arch, p)
    if arch.kind == "loss_attention":
        z = _linear(h, w, b)  # (k, N, K) instance logits
        s = torch.logsumexp(z, dim=-1)  # (k, N)
        alpha = LF.masked_softmax(s, mask)  # exactly 0 at padding, no gradient path through it
        emb = torch.bmm(alpha.unsqueeze(1), h)  # (k, 1, H)
        zb = _linear(emb, w, b).squeeze(1)  # (k, K)
        bag = F.cross_entropy(zb, y, reduction="none")
        k, N, _ = z.shape
        inst_ce = s - z.gather(-1, y.view(k, 1, 1).expand(k, N, 1)).squeeze(-1)
        inst = (alpha * inst_ce).sum(1)  # α = 0 at padding
        if arch.reduction == "mean":
            inst = inst / n
        return bag + arch.lam * inst
    alpha = LF.masked_softmax(_attention_scores(arch, p, h), mask)
    emb = torch.bmm(alpha.unsqueeze(1), h)
    zb = _linear(emb, w, b).squeeze(1)
    return F.cross_entropy(zb, y, reduction="none")


def _mlp_forward(arch: _Arch, p: dict[str, Tensor], x: Tensor, drop: list[Tensor] | None):
    """MLP output ``(k, N, H)`` and what its backward needs."""
    inputs, acts = [], []
    h = x
    for i, (wn, bn) in enumerate(arch.layers):
        inputs.append(h)
        r = _linear(h, p[wn], p[bn]).relu_()
        acts.append(r)
        h = r * drop[i] if drop is not None else r
    return h, (inputs, acts)


def _mlp_backward(
    arch: _Arch,
    p: dict[str, Tensor],
    g: dict[str, Tensor],
    gh: Tensor,
    cache,
    drop: list[Tensor] | None,
    accumulate: bool = False,
) -> None:
    """Writes (or adds) the MLP's weight and bias gradients, given d loss / d output ``gh``, into ``g``."""
    inputs, acts = cache
    gr = gh
    for i in range(len(arch.layers) - 1, -1, -1):
        wn, bn = arch.layers[i]
        if drop is not None:
            gr = gr * drop[i]
        ga = torch.ops.aten.threshold_backward(gr, acts[i], 0)  # ReLU: 0 where the output is 0
        if accumulate:
            g[wn].baddbmm_(inputs[i].transpose(1, 2), ga)
            g[bn].add_(ga.sum(1))
        else:
            torch.bmm(inputs[i].transpose(1, 2), ga, out=g[wn])
            torch.sum(ga, 1, out=g[bn])
        if i:
            gr = torch.bmm(ga, p[wn].transpose(1, 2))


def _head_loss_and_grads(
    arch: _Arch, p: dict[str, Tensor], g: dict[str, Tensor], h: Tensor, mask: Tensor, y: Tensor, n: Tensor
) -> tuple[Tensor, Tensor]:
    """Pooling + classifier of one bag per run: per-run loss ``(k,)`` and d(sum of losses)/d h ``(k, N, H)``.

    Writes the head's parameter gradients into ``g``. Padded instances have α = 0, so every gradient
    term of theirs is exactly 0.
    """
    wn_c, bn_c = _classifier_names(arch)
    Wc, bc = p[wn_c], p[bn_c]  # (k, H, K), (k, K)
    onehot = F.one_hot(y, Wc.shape[-1]).to(h.dtype)  # (k, K)
    if arch.kind == "loss_attention":
        z = _linear(h, Wc, bc)  # (k, N, K)
        s = torch.logsumexp(z, dim=-1)  # (k, N)
        scores = s
    else:
        T = _linear(h, p["attention.V.weight"], p["attention.V.bias"]).tanh_()  # (k, N, Hd)
        if arch.gated:
            G = _linear(h, p["attention.U.weight"], p["attention.U.bias"]).sigmoid_()
            A = T * G
        else:
            A = T
        scores = torch.bmm(A, p["attention.w.weight"]).squeeze(-1)  # (k, N)
    alpha = _masked_softmax(scores, mask)  # (k, N), 0 at padding
    emb = torch.bmm(alpha.unsqueeze(1), h)  # (k, 1, H)
    zb = _linear(emb, Wc, bc).squeeze(1)  # (k, K)
    logp = torch.log_softmax(zb, dim=-1)
    loss = -(logp * onehot).sum(-1)  # bag cross-entropy (k,)
    # backward of the bag term
    gzb = logp.exp_().sub_(onehot)  # (k, K)
    torch.bmm(emb.transpose(1, 2), gzb.unsqueeze(1), out=g[wn_c])  # (k, H, K)
    g[bn_c].copy_(gzb)
    ge = torch.bmm(gzb.unsqueeze(1), Wc.transpose(1, 2))  # (k, 1, H)
    gh = alpha.unsqueeze(-1) * ge  # (k, N, H)
    galpha = torch.bmm(h, ge.transpose(1, 2)).squeeze(-1)  # (k, N)
    if arch.kind == "loss_attention":
        c = arch.lam / n if arch.reduction == "mean" else torch.full_like(n, arch.lam)  # (k,)
        ce = s - (z * onehot.unsqueeze(1)).sum(-1)  # instance cross-entropies (k, N)
        loss = loss + c * (alpha * ce).sum(1)
        galpha = galpha + c.unsqueeze(1) * ce
        ca = c.unsqueeze(1) * alpha  # (k, N)
        gs = alpha * (galpha - (alpha * galpha).sum(1, keepdim=True)) + ca  # through the softmax + instance term
        gz = torch.softmax(z, dim=-1).mul_(gs.unsqueeze(-1)).sub_(ca.unsqueeze(-1) * onehot.unsqueeze(1))
        g[wn_c].baddbmm_(h.transpose(1, 2), gz)
        g[bn_c].add_(gz.sum(1))
        gh.baddbmm_(gz, Wc.transpose(1, 2))
    else:
        ga = alpha * (galpha - (alpha * galpha).sum(1, keepdim=True))  # (k, N)
        w = p["attention.w.weight"]  # (k, Hd, 1)
        torch.bmm(A.transpose(1, 2), ga.unsqueeze(-1), out=g["attention.w.weight"])
        gA = ga.unsqueeze(-1) * w.transpose(1, 2)  # (k, N, Hd)
        if arch.gated:
            gT = gA * G
            gpu = (gA * T).mul_(G * (1 - G))
            torch.bmm(h.transpose(1, 2), gpu, out=g["attention.U.weight"])
            torch.sum(gpu, 1, out=g["attention.U.bias"])
            gh.baddbmm_(gpu, p["attention.U.weight"].transpose(1, 2))
        else:
            gT = gA
        gpv = gT * (1 - T * T)
        torch.bmm(h.transpose(1, 2), gpv, out=g["attention.V.weight"])
        torch.sum(gpv, 1, out=g["attention.V.bias"])
        gh.baddbmm_(gpv, p["attention.V.weight"].transpose(1, 2))
    return loss, gh


def _head_pieces(
    arch: _Arch,
    p: dict[str, Tensor],
    g: dict[str, Tensor],
    pieces: list[tuple[Tensor | None, Tensor, Tensor]],
    y: Tensor,
    n: Tensor,
) -> tuple[Tensor, list[Tensor]]:
    """:func:`_head_loss_and_grads` for bags given as row pieces (see ``VectorizedTrainer._levels``).

    ``pieces[0] = (None, h, mask)`` holds the first rows of all ``k`` runs; ``pieces[l] = (idx, h_l, mask_l)``
    further rows of the runs ``idx``. The softmax over a bag's instances spans all its pieces. Returns the
    per-run losses ``(k,)`` and d(sum of losses)/d ``h_l`` for every piece; writes the head's gradients into ``g``.
    """
    if len(pieces) == 1:
        loss, gh = _head_loss_and_grads(arch, p, g, pieces[0][1], pieces[0][2], y, n)
        return loss, [gh]
    wn_c, bn_c = _classifier_names(arch)
    la = arch.kind == "loss_attention"
    head_names = [wn_c, bn_c] if la else [nm for nm in arch.names if not nm.startswith("extractor.")]
    K = p[wn_c].shape[-1]
    onehot = F.one_hot(y, K).to(pieces[0][1].dtype)  # (k, K)
    c = (arch.lam / n if arch.reduction == "mean" else torch.full_like(n, arch.lam)) if la else None
    fw = []  # per piece: (idx, params, h, mask, onehot, scores, extra)
    for idx, h, mask in pieces:
        q = p if idx is None else {nm: p[nm].index_select(0, idx) for nm in head_names}
        oh = onehot if idx is None else onehot.index_select(0, idx)
        if la:
            z = _linear(h, q[wn_c], q[bn_c])
            sc = torch.logsumexp(z, dim=-1)
            extra = (z,)
        else:
            T = _linear(h, q["attention.V.weight"], q["attention.V.bias"]).tanh_()
            G = _linear(h, q["attention.U.weight"], q["attention.U.bias"]).sigmoid_() if arch.gated else None
            A = T * G if G is not None else T
            sc = torch.bmm(A, q["attention.w.weight"]).squeeze(-1)
            extra = (T, G, A)
        fw.append((idx, q, h, mask, oh, sc, extra))

    def combine(first: Tensor, parts: list[Tensor], how: str = "sum") -> Tensor:
        out = first.clone()
        for (idx, *_), v in zip(fw[1:], parts, strict=True):
            if how == "sum":
                out.index_add_(0, idx, v)
            else:
                out.scatter_reduce_(0, idx, v, "amax")
        return out

    masked = [sc.masked_fill(~mask, -math.inf) for (_, _, _, mask, _, sc, _) in fw]
    top = combine(masked[0].amax(1), [m.amax(1) for m in masked[1:]], "amax")  # per-run max score
    ex = [
        (m - (top if f[0] is None else top.index_select(0, f[0])).unsqueeze(1)).exp_()
        for m, f in zip(masked, fw, strict=True)
    ]
    den = combine(ex[0].sum(1), [e.sum(1) for e in ex[1:]])
    alphas = [
        e / (den if f[0] is None else den.index_select(0, f[0])).unsqueeze(1) for e, f in zip(ex, fw, strict=True)
    ]
    embs = [torch.bmm(a.unsqueeze(1), f[2]).squeeze(1) for a, f in zip(alphas, fw, strict=True)]
    emb = combine(embs[0], embs[1:])  # (k, H)
    Wc, bc = p[wn_c], p[bn_c]
    zb = torch.baddbmm(bc.unsqueeze(1), emb.unsqueeze(1), Wc).squeeze(1)
    logp = torch.log_softmax(zb, dim=-1)
    loss = -(logp * onehot).sum(-1)
    gzb = logp.exp_().sub_(onehot)
    torch.bmm(emb.unsqueeze(2), gzb.unsqueeze(1), out=g[wn_c])
    g[bn_c].copy_(gzb)
    ge = torch.bmm(gzb.unsqueeze(1), Wc.transpose(1, 2))  # (k, 1, H)
    for nm in head_names:
        if nm not in (wn_c, bn_c):
            g[nm].zero_()  # attention-network gradients: accumulated piece by piece below
    gals, ces = [], []
    for (idx, _q, h, _mask, oh, sc, extra), a in zip(fw, alphas, strict=True):
        ge_l = ge if idx is None else ge.index_select(0, idx)
        gal = torch.bmm(h, ge_l.transpose(1, 2)).squeeze(-1)
        if la:
            c_l = c if idx is None else c.index_select(0, idx)
            ce = sc - (extra[0] * oh.unsqueeze(1)).sum(-1)
            ces.append((a * ce).sum(1) * c_l)
            gal = gal + c_l.unsqueeze(1) * ce
        gals.append(gal)
    if la:
        loss = loss + combine(ces[0], ces[1:])
    S = combine((alphas[0] * gals[0]).sum(1), [(a * gl).sum(1) for a, gl in zip(alphas[1:], gals[1:], strict=True)])
    ghs = []
    for (idx, q, h, _mask, oh, _sc, extra), a, gal in zip(fw, alphas, gals, strict=True):
        ge_l = ge if idx is None else ge.index_select(0, idx)
        S_l = S if idx is None else S.index_select(0, idx)
        gh = a.unsqueeze(-1) * ge_l
        gsc = a * (gal - S_l.unsqueeze(1))  # d/d score, through the softmax over the whole bag
        hg = {}  # this piece's head-parameter gradients
        if la:
            c_l = c if idx is None else c.index_select(0, idx)
            ca = c_l.unsqueeze(1) * a
            gsc = gsc + ca
            gz = torch.softmax(extra[0], dim=-1).mul_(gsc.unsqueeze(-1)).sub_(ca.unsqueeze(-1) * oh.unsqueeze(1))
            hg[wn_c] = torch.bmm(h.transpose(1, 2), gz)
            hg[bn_c] = gz.sum(1)
            gh.baddbmm_(gz, q[wn_c].transpose(1, 2))
        else:
            T, G, A = extra
            hg["attention.w.weight"] = torch.bmm(A.transpose(1, 2), gsc.unsqueeze(-1))
            gA = gsc.unsqueeze(-1) * q["attention.w.weight"].transpose(1, 2)
            if G is not None:
                gT = gA * G
                gpu = (gA * T).mul_(G * (1 - G))
                hg["attention.U.weight"] = torch.bmm(h.transpose(1, 2), gpu)
                hg["attention.U.bias"] = gpu.sum(1)
                gh.baddbmm_(gpu, q["attention.U.weight"].transpose(1, 2))
            else:
                gT = gA
            gpv = gT * (1 - T * T)
            hg["attention.V.weight"] = torch.bmm(h.transpose(1, 2), gpv)
            hg["attention.V.bias"] = gpv.sum(1)
            gh.baddbmm_(gpv, q["attention.V.weight"].transpose(1, 2))
        for nm, v in hg.items():
            if idx is None:
                g[nm].add_(v)
            else:
                g[nm].index_add_(0, idx, v)
        ghs.append(gh)
    return loss, ghs


def _loss_and_grads(
    arch: _Arch,
    p: dict[str, Tensor],
    g: dict[str, Tensor],
    x: Tensor,
    mask: Tensor,
    y: Tensor,
    n: Tensor,
    drop: list[Tensor] | None,
) -> Tensor:
    """Per-run loss ``(k,)`` of one bag per run; writes d(sum of losses)/d(param) into ``g`` (same shapes as ``p``).

    The same function as :func:`_train_loss`, differentiated by hand: no autograd graph, and the weight
    gradients go straight into the persistent buffers ``g`` (no per-step allocation of ~R×100k floats).
    """
    h, cache = _mlp_forward(arch, p, x, drop)
    loss, gh = _head_loss_and_grads(arch, p, g, h, mask, y, n)
    _mlp_backward(arch, p, g, gh, cache, drop)
    return loss


# --------------------------------------------------------------------------- evaluation sets


@dataclass
class _EvalSet:
    """The validation + test bags of every run, instances flattened per run and padded across runs.

    Bag ``j`` of run ``r`` owns the instances with ``bag_id[r] == j``; padded instances belong to the
    dummy bag ``nb`` (ignored). Bags ``0 .. n_val[r]-1`` are validation bags, the next ``n_test[r]`` test bags.
    """

    x: Tensor  # (R, M, D)
    bag_id: Tensor  # (R, M) long, in 0..nb
    inst_label: Tensor  # (R, M) long: the label of the instance's bag
    labels: Tensor  # (R, nb + 1) long
    sizes: Tensor  # (R, nb + 1) float
    is_val: Tensor  # (R, nb + 1) bool
    is_test: Tensor  # (R, nb + 1) bool
    n_val: np.ndarray  # (R,)
    n_test: np.ndarray  # (R,)
    nb: int
    runs: Tensor | None = None  # positions of these runs in the group (a chunk of it)


def _flat(ds) -> tuple[Tensor, np.ndarray]:
    x, offsets = ds.to_flat()
    return x.reshape(x.shape[0], -1), np.diff(offsets)


def _eval_chunks(vals: Sequence[Any], tests: Sequence[Any], device: torch.device, budget: int) -> list[_EvalSet]:
    """The evaluation bags of all runs as chunks of runs with similar instance counts (little padding).

    A chunk starts with the largest remaining run and takes the next ones while their instance count is at
    least 3/4 of the first's and the chunk's activations stay under ``budget`` bytes.
    """
    counts = [
        sum(ds.num_instances for ds in (v, t) if ds is not None and len(ds)) for v, t in zip(vals, tests, strict=True)
    ]
    order = sorted(range(len(vals)), key=lambda r: -counts[r])
    width = next(ds.num_features for pair in zip(vals, tests, strict=True) for ds in pair if ds is not None)
    chunks, i = [], 0
    while i < len(order):
        first = max(counts[order[i]], 1)
        per_run = first * (width + 3 * 256) * 4
        j = i + 1
        while j < len(order) and 4 * counts[order[j]] >= 3 * first and (j - i + 1) * per_run <= budget:
            j += 1
        runs = order[i:j]
        ev = _build_eval([vals[r] for r in runs], [tests[r] for r in runs], device)
        ev.runs = torch.tensor(runs, device=device)
        chunks.append(ev)
        i = j
    return chunks


def _build_eval(vals: Sequence[Any], tests: Sequence[Any], device: torch.device) -> _EvalSet:
    R = len(vals)
    parts = []
    for v, t in zip(vals, tests, strict=True):
        xs, sizes, labels, nv, nt = [], [], [], 0, 0
        for ds, is_val in ((v, True), (t, False)):
            if ds is None or len(ds) == 0:
                continue
            x, sz = _flat(ds)
            xs.append(x)
            sizes.append(sz)
            labels.append(np.asarray(ds.labels))
            if is_val:
                nv = len(ds)
            else:
                nt = len(ds)
        parts.append((xs, sizes, labels, nv, nt))
    M = max(sum(int(s.sum()) for s in p[1]) for p in parts)
    nb = max(p[3] + p[4] for p in parts)
    D = next(x.shape[1] for p in parts for x in p[0])
    X = torch.zeros((R, max(M, 1), D))
    bag_id = torch.full((R, max(M, 1)), nb, dtype=torch.long)
    inst_label = torch.zeros((R, max(M, 1)), dtype=torch.long)
    labels = torch.zeros((R, nb + 1), dtype=torch.long)
    sizes = torch.ones((R, nb + 1))
    is_val = torch.zeros((R, nb + 1), dtype=torch.bool)
    is_test = torch.zeros((R, nb + 1), dtype=torch.bool)
    n_val, n_test = np.zeros(R, dtype=np.int64), np.zeros(R, dtype=np.int64)
    for r, (xs, szs, lbs, nv, nt) in enumerate(parts):
        n_val[r], n_test[r] = nv, nt
        if not xs:
            continue
        x, sz, lb = torch.cat(xs), np.concatenate(szs), np.concatenate(lbs)
        m, n = x.shape[0], len(sz)
        X[r, :m] = x
        ids = np.repeat(np.arange(n), sz)
        bag_id[r, :m] = torch.from_numpy(ids)
        inst_label[r, :m] = torch.from_numpy(lb[ids])
        labels[r, :n] = torch.from_numpy(lb)
        sizes[r, :n] = torch.from_numpy(sz.astype(np.float32))
        is_val[r, :nv] = True
        is_test[r, nv:n] = True
    t = lambda a: a.to(device)  # noqa: E731
    return _EvalSet(t(X), t(bag_id), t(inst_label), t(labels), t(sizes), t(is_val), t(is_test), n_val, n_test, nb)


@torch.no_grad()
def _eval_chunk(arch: _Arch, p: dict[str, Tensor], ev: _EvalSet) -> tuple[Tensor, Tensor]:
    """Bag probabilities ``(c, nb+1, K)`` and per-bag losses ``(c, nb+1)`` of the chunk's runs (no dropout)."""
    x = ev.x
    c, M, _ = x.shape
    nb1 = ev.nb + 1
    gid = (ev.bag_id + torch.arange(c, device=x.device).unsqueeze(1) * nb1).reshape(-1)  # (c*M,)
    h = _mlp(arch, p, x, None)  # (c, M, H)
    H = h.shape[-1]
    w, b = _classifier(arch, p)
    if arch.kind == "loss_attention":
        z = _linear(h, w, b)  # (c, M, K)
        s = torch.logsumexp(z, dim=-1)
    else:
        s = _attention_scores(arch, p, h)
    flat = s.reshape(-1)
    smax = torch.full((c * nb1,), -math.inf, device=x.device).scatter_reduce(0, gid, flat, "amax")
    e = (flat - smax[gid]).exp()
    den = torch.zeros(c * nb1, device=x.device).index_add_(0, gid, e)
    alpha = e / den[gid]  # segment softmax over each bag's instances
    emb = torch.zeros(c * nb1, H, device=x.device).index_add_(0, gid, alpha.unsqueeze(1) * h.reshape(-1, H))
    zb = _linear(emb.view(c, nb1, H), w, b)  # (c, nb+1, K)
    K = zb.shape[-1]
    labels = ev.labels
    loss = F.cross_entropy(zb.reshape(-1, K), labels.reshape(-1), reduction="none").view(c, nb1)
    if arch.kind == "loss_attention":
        inst_ce = s - z.gather(-1, ev.inst_label.unsqueeze(-1)).squeeze(-1)
        inst = torch.zeros(c * nb1, device=x.device).index_add_(0, gid, alpha * inst_ce.reshape(-1)).view(c, nb1)
        if arch.reduction == "mean":
            inst = inst / ev.sizes
        loss = loss + arch.lam * inst
    return torch.softmax(zb, dim=-1), loss


# --------------------------------------------------------------------------- Adam


def _fused_available() -> bool:
    try:
        p, g = torch.zeros(2), torch.zeros(2)
        torch._fused_adam_(
            [p], [g], [p.clone()], [p.clone()], [], [torch.ones(())],
            lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
        )  # fmt: skip
        return True
    except (AttributeError, RuntimeError, TypeError):  # pragma: no cover - depends on the torch build
        return False


def _adam_reference(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, weight_decay, eps):
    """``torch.optim.Adam`` (single-tensor, L2 weight decay) math; used where the fused kernel is missing."""
    for p, g, m, v, st in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        step = float(st)
        if weight_decay:
            g = g.add(p, alpha=weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bc1 = 1 - beta1**step
        bc2_sqrt = math.sqrt(1 - beta2**step)
        denom = (v.sqrt() / bc2_sqrt).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bc1)


# --------------------------------------------------------------------------- engine


class VectorizedTrainer:
    """Train ``R`` independent runs of one architecture as one batched computation.

    Args:
        models: the ``R`` initialised models (built like :func:`lossattn.train.protocols.execute_run`
            does: ``torch.manual_seed(seed_r)`` then ``create_model``); they must share the architecture.
            At the end each holds its run's selected parameters.
        config: the shared :class:`TrainConfig` (``batch_size`` must be 1).
        seeds: the ``R`` run seeds (batch order, as the Trainer, and the per-run dropout generators).
        max_levels: at most this many row levels per step (1 = always pad to the step's largest bag);
            see :meth:`_levels`.
        level_overhead: cost of one more level, in padded instance rows.
        gather_cost: cost per gathered run, in instance rows, of a level above the first. (The defaults
            were tuned on MUSK2 and hardly matter elsewhere: small-bag steps are bound by reading the
            runs' weights, not by padded rows, so extra levels rarely pay off.)
        eval_budget: bytes of activations one batched evaluation pass may use (runs are chunked to fit).

    Denormal floats are flushed to zero while training when ``config.flush_denormal`` is set (the
    default, as for the Trainer): after a few epochs of the classic-MIL protocol ~10% of the first layer's
    Adam moments are denormal (below 1.2e-38), and arithmetic on them is ~100x slower on x86; flushing
    makes the later epochs ~3x faster and the results stay equal to the Trainer's to float rounding
    (tests/train/test_vectorized.py).
    """

    def __init__(
        self,
        models: Sequence[MILModel],
        config: TrainConfig,
        seeds: Sequence[int],
        *,
        max_levels: int = 4,
        level_overhead: int = 300,
        gather_cost: int = 60,
        eval_budget: int = 256 * 2**20,
    ) -> None:
        config.validate()
        models = list(models)
        if not models or len(models) != len(seeds):
            raise ValueError(f"need one seed per model, got {len(models)} models and {len(seeds)} seeds")
        for m in models:
            reason = unsupported_reason(m, config)
            if reason is not None:
                raise ValueError(f"the vectorized engine cannot train this run: {reason}")
        arch = _arch(models[0])
        shapes = [tuple(p.shape) for p in models[0].parameters()]
        for m in models[1:]:
            a = _arch(m)
            if (a.kind, a.names, a.dropout, a.lam, a.reduction, a.gated) != (
                arch.kind,
                arch.names,
                arch.dropout,
                arch.lam,
                arch.reduction,
                arch.gated,
            ) or [tuple(p.shape) for p in m.parameters()] != shapes:
                raise ValueError("all runs of a vectorized group must share the model and its hyperparameters")
        self.models = models
        self.config = config
        self.seeds = [int(s) for s in seeds]
        self.arch = arch
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("TrainConfig.device is 'cuda' but no CUDA device is available; use device=cpu")
        self.max_levels = max(1, int(max_levels))
        self.level_overhead = int(level_overhead)
        self.gather_cost = int(gather_cost)
        self.eval_budget = int(eval_budget)
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ schedule (the Trainer's)
    def _schedule(self, epoch: int) -> dict[str, float]:
        return epoch_schedule(self.config, epoch)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train_sets: Sequence[Any],
        val_sets: Sequence[Any] | None = None,
        test_sets: Sequence[Any] | None = None,
    ) -> list[FitResult]:
        """Train every run on its ``train_sets[r]``, select on ``val_sets[r]``, report on ``test_sets[r]``.

        Returns one :class:`FitResult` per run, in input order, as :meth:`Trainer.fit` would
        (``history`` rows hold the schedule, ``train_loss``, validation loss/accuracy/error, test
        accuracy and the selected epoch; no per-epoch AUC).
        """
        with flush_denormals(self.config.flush_denormal):
            return self._fit(train_sets, val_sets, test_sets)

    def _fit(self, train_sets, val_sets, test_sets) -> list[FitResult]:
        R = len(self.models)
        if len(train_sets) != R:
            raise ValueError(f"got {len(train_sets)} training sets for {R} runs")
        vals = list(val_sets) if val_sets is not None else [None] * R
        tests = list(test_sets) if test_sets is not None else [None] * R
        if len(vals) != R or len(tests) != R:
            raise ValueError("need one validation and one test set (or None) per run")
        for ds in train_sets:
            if len(ds) == 0:
                raise ValueError("the training set has no bags")
        c = self.config
        start = time.perf_counter()
        cpu_start = time.process_time()
        if c.threads:
            torch.set_num_threads(c.threads)
        dev, arch = self.device, self.arch

        # runs sorted by number of training bags, descending: the runs still active at step t are a prefix,
        # and runs with equally many bags (same step count, hence same Adam bias correction) are contiguous
        n_train = np.array([len(ds) for ds in train_sets], dtype=np.int64)
        order = np.argsort(-n_train, kind="stable")
        n_sorted = n_train[order]
        seeds = [self.seeds[i] for i in order]
        models = [self.models[i] for i in order]
        trains = [train_sets[i] for i in order]
        vals = [vals[i] for i in order]
        tests = [tests[i] for i in order]
        classes = [(int(a), int(b)) for a, b in _runs_of_equal(n_sorted)]  # contiguous [a, b) slices

        # stacked parameters, 2-D weights transposed to (in, out); Adam state; gradient buffers
        with torch.no_grad():
            params = {
                name: torch.stack([_to_engine(dict(m.named_parameters())[name].detach()) for m in models])
                .to(dev)
                .contiguous()
                for name in arch.names
            }
        grads = {n: torch.zeros_like(p) for n, p in params.items()}
        exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        steps = [torch.zeros((), dtype=torch.float32, device=dev) for _ in classes]
        best = {n: p.clone() for n, p in params.items()}
        # scratch for the gathered MLP parameters/gradients of the runs with long bags (see _levels)
        self._mlp_names = [nm for pair in arch.layers for nm in pair]
        self._scratch_p = {nm: torch.empty_like(params[nm]) for nm in self._mlp_names}
        self._scratch_g = {nm: torch.empty_like(params[nm]) for nm in self._mlp_names}
        fused = _fused_available()
        self.stats = {"multi_level_steps": 0, "steps": 0, "updates": []}
        # Adam operands per class of runs (leading-dim slices of the stacked tensors are contiguous views)
        adam_lists = [
            (
                [params[n][a:b] for n in arch.names],
                [grads[n][a:b] for n in arch.names],
                [exp_avg[n][a:b] for n in arch.names],
                [exp_avg_sq[n][a:b] for n in arch.names],
                [steps[i]] * len(arch.names),
            )
            for i, (a, b) in enumerate(classes)
        ]
        self._all_classes = adam_lists

        # training instances of all runs, flat, plus one zero row for padding
        flats = [_flat(ds) for ds in trains]
        sizes = [sz for _, sz in flats]
        counts = np.array([int(sz.sum()) for sz in sizes], dtype=np.int64)
        base = np.concatenate([[0], np.cumsum(counts)])
        pad_row = int(base[-1])
        X = torch.cat([x for x, _ in flats] + [torch.zeros((1, flats[0][0].shape[1]))]).to(dev)
        bag_start = [base[r] + np.concatenate([[0], np.cumsum(sizes[r])[:-1]]) for r in range(R)]
        labels = [np.asarray(ds.labels, dtype=np.int64) for ds in trains]
        del flats

        has_val = [v is not None and len(v) > 0 for v in vals]
        has_test = [t is not None and len(t) > 0 for t in tests]
        # test bags are scored per epoch only for the labelled oracle figure (TrainConfig.oracle)
        oracle_test = [c.oracle and h for h in has_test]
        ev_tests = [t if o else None for t, o in zip(tests, oracle_test, strict=True)]
        ev = _eval_chunks(vals, ev_tests, dev, self.eval_budget) if (any(has_val) or any(oracle_test)) else None

        p_drop = arch.dropout
        gens = [np.random.default_rng([int(s) & 0xFFFFFFFF, _DROPOUT_STREAM]) for s in seeds] if p_drop > 0 else []
        width = sum(arch.widths)
        cuts = np.cumsum([0] + arch.widths)

        histories: list[list[dict[str, Any]]] = [[] for _ in range(R)]
        best_key: list[tuple[float, float] | None] = [None] * R
        best_epoch = [-1] * R
        t_train = t_eval = cpu_train = 0.0
        T = int(n_sorted[0])
        active_at = np.array([(n_sorted > t).sum() for t in range(T)], dtype=np.int64)
        size_tab = np.stack([_pad(s, T) for s in sizes])
        start_tab = np.stack([_pad(s, T) for s in bag_start])
        label_tab = np.stack([_pad(s, T) for s in labels])

        for epoch in range(c.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            sched = self._schedule(epoch)
            b1, b2 = sched["beta1"], sched["beta2"]
            # per run: the bag order of this epoch, exactly as the Trainer draws it
            bag = np.full((R, T), -1, dtype=np.int64)
            for r in range(R):
                bag[r, : n_sorted[r]] = np.random.default_rng([seeds[r], epoch]).permutation(int(n_sorted[r]))
            valid = bag >= 0
            safe = np.where(valid, bag, 0)
            size = np.where(valid, np.take_along_axis(size_tab, safe, 1), 0)
            fstart = np.where(valid, np.take_along_axis(start_tab, safe, 1), 0)
            ylab = np.where(valid, np.take_along_axis(label_tab, safe, 1), 0)
            drop_rows = None
            if p_drop > 0:
                # the run's dropout masks of the epoch, drawn for its real instances in epoch order
                dstart = np.cumsum(size, axis=1) - size
                dbase = np.concatenate([[0], np.cumsum(counts)])
                dstart = dstart + dbase[:R, None]
                keep = torch.from_numpy(
                    np.concatenate(
                        [_keep_mask(gens[r], int(counts[r]), width, p_drop) for r in range(R)]
                        + [np.zeros((1, width), dtype=bool)]
                    )
                ).to(dev)
                drop_rows = (keep, dstart, int(dbase[-1]))
            loss_sum = torch.zeros(R, device=dev)
            for t in range(T):
                k = int(active_at[t])
                self._step(t, k, params, grads, X, pad_row, size, fstart, ylab, drop_rows, loss_sum, cuts, p_drop, dev)
                active = [adam_lists[i] for i, (a, _) in enumerate(classes) if n_sorted[a] > t]
                self._adam(active, sched["lr"], b1, b2, fused)
            t1 = time.perf_counter()
            t_train += t1 - t0
            cpu_train += time.process_time() - c0

            train_loss = (loss_sum / torch.from_numpy(n_sorted).to(dev, torch.float32)).tolist()
            bad = [seeds[r] for r in range(R) if not math.isfinite(train_loss[r])]
            if bad:
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch} in the run(s) with seed {bad}; "
                    "lower the learning rate or check the features"
                )
            metrics = self._evaluate_epoch(params, ev, R) if ev is not None else None
            improved = []
            for r in range(R):
                row: dict[str, Any] = {"epoch": epoch, **sched, "train_loss": train_loss[r]}
                if has_val[r]:
                    row.update(
                        val_loss=metrics["val_loss"][r],
                        val_accuracy=metrics["val_accuracy"][r],
                        val_error=1.0 - metrics["val_accuracy"][r],
                    )
                    cand = (row["val_error"], row["val_loss"])
                else:
                    cand = (0.0, -float(epoch))  # no validation: the last epoch wins
                if oracle_test[r]:
                    row["test_accuracy"] = metrics["test_accuracy"][r]
                if _better(cand, best_key[r]):
                    best_key[r], best_epoch[r] = cand, epoch
                    improved.append(r)
                row["selected_epoch"] = best_epoch[r]
                histories[r].append(row)
            if improved:
                idx = torch.tensor(improved, device=dev)
                for n, p in params.items():
                    best[n].index_copy_(0, idx, p.index_select(0, idx))
            t_eval += time.perf_counter() - t1

        updates = np.zeros(R, dtype=np.int64)
        for (a, b), st in zip(classes, steps, strict=True):
            updates[order[a:b]] = int(st)
        self.stats["updates"] = updates.tolist()  # optimizer steps per run, in input order
        # every run's model gets its selected parameters; final metrics from the ordinary evaluate()
        t2 = time.perf_counter()
        results: list[FitResult | None] = [None] * R
        elapsed = time.perf_counter() - start
        for r in range(R):
            model = models[r]
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(_from_engine(best[n][r]).to(p.device))
            model.to(dev)
            v = evaluate(model, vals[r], c.eval_batch_size, dev) if has_val[r] else None
            te = evaluate(model, tests[r], c.eval_batch_size, dev) if has_test[r] else None
            oracle = max((h["test_accuracy"] for h in histories[r] if "test_accuracy" in h), default=None)
            results[int(order[r])] = FitResult(
                selected_epoch=int(best_epoch[r]),
                history=histories[r],
                val=v,
                test=te,
                oracle_test_accuracy=oracle,
                model=model,
                seconds=elapsed / R,
                extra={"engine": "vectorized", "group_size": R},
            )
        total = time.perf_counter() - start
        self.timings = {
            "train": t_train,
            "eval": t_eval,
            "final_eval": time.perf_counter() - t2,
            "total": total,
            "cpu_total": time.process_time() - cpu_start,
            "cpu_train": cpu_train,
            "runs": R,
            "steps": int(c.epochs * T),
        }
        for res in results:
            assert res is not None
            res.seconds = total / R
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ one step
    def _levels(self, sz: np.ndarray) -> list[int]:
        """Row thresholds ``t_1 < … < t_L = max(sz)`` splitting a step's padded bags into levels.

        Level 1 holds rows ``[0, t_1)`` of every run (one dense batch, padded where a bag is shorter);
        level ``l > 1`` holds rows ``[t_{l-1}, t_l)`` of the runs whose bag is longer than ``t_{l-1}``, with
        their MLP parameters gathered. Only the MLP runs per level; pooling and loss see whole bags.
        Cost model in instance rows: each level costs its padded rows plus ``level_overhead``, and
        ``gather_cost`` per gathered run. Dynamic programming over the distinct bag sizes.
        """
        k = sz.shape[0]
        top = int(sz.max())
        alpha, gamma = self.level_overhead, self.gather_cost
        if self.max_levels == 1 or k * top - int(sz.sum()) <= alpha + gamma:
            return [top]
        u, cnt = np.unique(sz, return_counts=True)
        m = len(u)
        A = k - np.cumsum(cnt)  # runs with a bag longer than u[i]
        big = np.iinfo(np.int64).max // 4
        ii, jj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        span = np.where(ii < jj, A[:, None] * (u[None, :] - u[:, None] + gamma) + alpha, big)
        dp = k * u + alpha  # one level covering rows [0, u[j])
        best_cost, best_l, back = int(dp[-1]), 1, []
        for nl in range(2, min(self.max_levels, m) + 1):
            M = dp[:, None] + span
            arg = M.argmin(0)
            dp = M[arg, np.arange(m)]
            back.append(arg)
            if dp[-1] < best_cost:
                best_cost, best_l = int(dp[-1]), nl
        ends, j = [m - 1], m - 1
        for nl in range(best_l, 1, -1):
            j = int(back[nl - 2][j])
            ends.append(j)
        return [int(u[e]) for e in sorted(ends)]

    def _step(self, t, k, params, grads, X, pad_row, size, fstart, ylab, drop_rows, loss_sum, cuts, p_drop, dev):
        """Loss and gradients of step ``t`` for the ``k`` active runs (gradients into ``grads[:k]``)."""
        arch = self.arch
        R = len(loss_sum)
        sz = size[:k, t]
        thresholds = self._levels(sz)
        self.stats["steps"] += 1
        self.stats["multi_level_steps"] += len(thresholds) > 1
        p_all = params if k == R else {nm: v[:k] for nm, v in params.items()}
        g_all = grads if k == R else {nm: v[:k] for nm, v in grads.items()}
        y = torch.from_numpy(ylab[:k, t]).to(dev)
        n = torch.from_numpy(sz.astype(np.float32)).to(dev)
        levels = []
        if len(thresholds) > 1:
            # the runs with a bag longer than the first level, longest first: every further level's runs
            # are a prefix of this order, so their MLP parameters are gathered once
            long_runs = np.flatnonzero(sz > thresholds[0])
            long_runs = long_runs[np.argsort(-sz[long_runs], kind="stable")]
            gidx = torch.from_numpy(long_runs).to(dev)
            pg = {
                nm: torch.index_select(params[nm], 0, gidx, out=self._scratch_p[nm][: len(long_runs)])
                for nm in self._mlp_names
            }
            gg = {nm: self._scratch_g[nm][: len(long_runs)] for nm in self._mlp_names}
        lo = 0
        for hi in thresholds:
            runs = np.arange(k) if lo == 0 else long_runs[: int((sz > lo).sum())]
            rows = np.arange(lo, hi)
            valid = rows[None, :] < sz[runs, None]
            fidx = np.where(valid, fstart[runs, t][:, None] + rows, pad_row)
            x = X.index_select(0, torch.from_numpy(fidx.reshape(-1)).to(dev)).view(len(runs), hi - lo, -1)
            drop = None
            if drop_rows is not None:
                keep, dstart, dpad = drop_rows
                didx = np.where(valid, dstart[runs, t][:, None] + rows, dpad)
                kept = keep.index_select(0, torch.from_numpy(didx.reshape(-1)).to(dev)).view(len(runs), hi - lo, -1)
                scaled = kept.to(torch.float32).mul_(1.0 / (1.0 - p_drop))
                drop = [scaled[..., int(cuts[i]) : int(cuts[i + 1])] for i in range(len(cuts) - 1)]
            if lo == 0:
                idx, p, g = None, p_all, g_all
            else:
                idx = gidx[: len(runs)]
                p = {nm: v[: len(runs)] for nm, v in pg.items()}
                g = {nm: v[: len(runs)] for nm, v in gg.items()}
            h, cache = _mlp_forward(arch, p, x, drop)
            levels.append((lo, hi, idx, p, g, h, cache, drop, valid))
            lo = hi
        pieces = [(idx, h, torch.from_numpy(valid).to(dev)) for (_, _, idx, _, _, h, _, _, valid) in levels]
        loss, ghs = _head_pieces(arch, p_all, g_all, pieces, y, n)
        for i, ((_lo, _hi, _idx, p, g, _, cache, drop, _), gh) in enumerate(zip(levels, ghs, strict=True)):
            # the long runs' gradients of the further levels are summed in gg, then added to theirs
            _mlp_backward(arch, p, g, gh, cache, drop, accumulate=i > 1)
        if len(levels) > 1:
            for nm in self._mlp_names:
                grads[nm].index_add_(0, gidx, gg[nm])
        loss_sum[:k] += loss

    def _adam(self, active, lr, b1, b2, fused) -> None:
        """One Adam step (``torch.optim.Adam`` math, L2 weight decay) of the active classes of runs."""
        if not active:
            return
        ps, gs, ms, vs, sts = ([x for cls in active for x in cls[j]] for j in range(5))
        for cls in active:
            cls[4][0].add_(1)  # the class's step count (shared by its parameter tensors)
        kw = dict(lr=lr, beta1=b1, beta2=b2, weight_decay=self.config.weight_decay, eps=1e-8)
        if fused:
            torch._fused_adam_(ps, gs, ms, vs, [], sts, amsgrad=False, maximize=False, **kw)
        else:
            _adam_reference(ps, gs, ms, vs, sts, **kw)

    # ------------------------------------------------------------------ per-epoch evaluation
    def _evaluate_epoch(self, params: dict[str, Tensor], chunks: list[_EvalSet], R: int) -> dict[str, list[float]]:
        """Validation loss/accuracy (and oracle test accuracy) of every run with its current parameters."""
        out: dict[str, list[float]] = {k: [math.nan] * R for k in ("val_loss", "val_accuracy", "test_accuracy")}
        for ev in chunks:
            p = {n: v.index_select(0, ev.runs) for n, v in params.items()}
            prob, loss = _eval_chunk(self.arch, p, ev)
            correct = (prob.argmax(-1) == ev.labels).cpu().numpy()
            loss_np = loss.double().cpu().numpy()
            is_val, is_test = ev.is_val.cpu().numpy(), ev.is_test.cpu().numpy()
            for j, r in enumerate(ev.runs.tolist()):
                nv, nt = int(ev.n_val[j]), int(ev.n_test[j])
                if nv:
                    out["val_accuracy"][r] = int(correct[j][is_val[j]].sum()) / nv
                    out["val_loss"][r] = float(loss_np[j][is_val[j]].mean())
                if nt:
                    out["test_accuracy"][r] = int(correct[j][is_test[j]].sum()) / nt
        return out


def _to_engine(p: Tensor) -> Tensor:
    """Parameter in the engine's layout: 2-D (nn.Linear ``(out, in)``) weights transposed to ``(in, out)``."""
    return p.t() if p.dim() == 2 else p


def _from_engine(p: Tensor) -> Tensor:
    return p.t() if p.dim() == 2 else p


def _runs_of_equal(values: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous ``[a, b)`` slices of equal values in a sorted array."""
    out, a = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[a]:
            out.append((a, i))
            a = i
    return out


def _pad(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.asarray(a).dtype)
    out[: len(a)] = a
    return out


_DROPOUT_STREAM = 0xD40  # a run's dropout generator is np.random.default_rng([run seed, _DROPOUT_STREAM])


def _keep_mask(rng: np.random.Generator, n: int, width: int, p: float) -> np.ndarray:
    """``(n, width)`` bool dropout keep-mask, each entry True with probability ``1 - p``."""
    q = p * 256
    if q == int(q):  # p a multiple of 1/256 (0.5, 0.25, ...): one random byte per entry, exact
        return rng.integers(0, 256, size=(n, width), dtype=np.uint8) >= int(q)
    return rng.random((n, width), dtype=np.float32) >= p


# --------------------------------------------------------------------------- protocol integration


def method_unsupported_reason(cfg, method: str) -> str | None:
    """None when every run of ``method`` in experiment ``cfg`` can use the vectorized engine, else why not."""
    from lossattn.registry import create_model

    spec = cfg.methods[method]
    if spec.model not in SUPPORTED_MODELS:
        return f"model {spec.model!r} is not vectorized (supported: {', '.join(SUPPORTED_MODELS)})"
    train_cfg = cfg.train_config_for(method)
    try:
        probe = create_model(spec.model, in_features=4, num_classes=2, **spec.kwargs)
    except Exception as exc:  # noqa: BLE001 - the per-run path will raise the real error
        return f"cannot build the model to check it: {exc}"
    return unsupported_reason(probe, train_cfg)


def run_group(cfg, method: str, specs: Sequence[Any], out_dir=None, resume: bool = False, **engine_kw) -> list[dict]:
    """Train the runs ``specs`` (all of ``method``) of experiment ``cfg`` as one vectorized group.

    Each run is prepared exactly as :func:`lossattn.train.protocols.execute_run` prepares it (same split,
    standardiser, seed and initial parameters) and returns a record with the same fields plus
    ``"engine": "vectorized"``; ``seconds`` is the group's wall time divided by its number of runs. With
    ``out_dir``, each run directory gets ``config.yaml``, ``versions.json``, ``best.pt`` and
    ``result.json`` (no per-epoch checkpoints: an interrupted group is retrained; with ``resume``,
    complete runs are read back).
    """
    import json
    from pathlib import Path

    import yaml

    from lossattn.registry import create_model
    from lossattn.train.config import ExperimentConfig, config_from_dict, config_to_dict
    from lossattn.train.io import atomic_write_json, atomic_write_text, save_checkpoint, versions
    from lossattn.train.protocols import prepare_split, run_record, run_seed

    if isinstance(cfg, dict):
        cfg = config_from_dict(ExperimentConfig, cfg).validate()
    if any(s.method != method for s in specs):
        raise ValueError(f"every run of a vectorized group must be of method {method!r}")
    records: dict[int, dict] = {}
    todo = []
    for i, spec in enumerate(specs):
        run_dir = None if out_dir is None else Path(out_dir) / spec.method / spec.key
        if run_dir is not None and resume and (run_dir / "result.json").exists():
            records[i] = json.loads((run_dir / "result.json").read_text())
        else:
            todo.append((i, spec, run_dir))
    if todo:
        train_cfg = cfg.train_config_for(method)
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        mcfg = cfg.methods[method]
        runs = []
        for i, spec, run_dir in todo:
            seed = run_seed(cfg, spec.repeat, spec.fold)
            train, val, test, scaler = prepare_split(cfg, spec.repeat, spec.fold, return_scaler=True)
            torch.manual_seed(seed)
            model = create_model(
                mcfg.model, in_features=train.num_features, num_classes=int(train.num_classes), **mcfg.kwargs
            )
            if run_dir is not None:
                run_dir.mkdir(parents=True, exist_ok=True)
                resolved = config_to_dict(cfg)
                resolved["run"] = {"method": spec.method, "repeat": spec.repeat, "fold": spec.fold, "seed": seed}
                resolved["train_resolved"] = config_to_dict(train_cfg)
                resolved["engine"] = "vectorized"
                atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
                atomic_write_json(run_dir / "versions.json", versions())
            runs.append((i, spec, run_dir, seed, train, val, test, scaler, model))
        engine = VectorizedTrainer([r[8] for r in runs], train_cfg, [r[3] for r in runs], **engine_kw)
        fits = engine.fit([r[4] for r in runs], [r[5] for r in runs], [r[6] for r in runs])
        for (i, spec, run_dir, seed, train, val, test, scaler, model), fit in zip(runs, fits, strict=True):
            record = run_record(
                spec.method, mcfg.model, spec.repeat, spec.fold, seed, train_cfg, (train, val, test), fit
            )
            record["engine"] = "vectorized"
            if run_dir is not None:
                save_checkpoint(
                    run_dir / "best.pt",
                    {
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                        "epoch": fit.selected_epoch,
                        "model_name": getattr(model, "model_name", None),
                        "model_kwargs": getattr(model, "model_kwargs", {}),
                        "train_config": config_to_dict(train_cfg),
                        "seed": seed,
                        "standardizer": None if scaler is None else scaler.state_dict(),
                        "data_config": config_to_dict(cfg.data),
                        "num_classes": int(train.num_classes),
                        "instance_shape": list(train.instance_shape),
                        "method": spec.method,
                        "engine": "vectorized",
                    },
                )
                atomic_write_json(run_dir / "result.json", record)
            records[i] = record
    return [records[i] for i in range(len(specs))]
