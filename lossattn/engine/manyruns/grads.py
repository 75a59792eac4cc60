"""Loss and gradients of one bag per run for ``k`` runs at once, differentiated by hand.

:func:`loss_and_grads` is :func:`reference_loss` (written with autograd-friendly ops) with its backward pass
written out: no autograd graph, and the ~R×100k weight gradients go straight into persistent buffers instead
of fresh allocations every step. Tests check it against autograd on :func:`reference_loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lossattn import functional as LF
from lossattn.engine.manyruns.arch import (
    Arch,
    attention_scores,
    classifier,
    classifier_names,
    linear,
    masked_softmax,
    mlp,
)

__all__ = ["head_loss_and_grads", "head_pieces", "loss_and_grads", "mlp_backward", "mlp_forward", "reference_loss"]


def reference_loss(
    arch: Arch, p: dict[str, Tensor], x: Tensor, mask: Tensor, y: Tensor, n: Tensor, drop: list[Tensor] | None
) -> Tensor:
    """Per-run loss ``(k,)`` of one bag per run, by autograd-friendly ops (the reference of :func:`loss_and_grads`).

    ``x (k, N, D)``, ``mask (k, N)``, ``y (k,)`` labels, ``n (k,)`` bag sizes, ``drop`` per-layer scaled masks.
    """
    h = mlp(arch, p, x, drop)  # (k, N, H)
    w, b = classifier(arch, p)
    if arch.kind == "loss_attention":
        z = linear(h, w, b)  # (k, N, K) instance logits
        s = torch.logsumexp(z, dim=-1)  # (k, N)
        alpha = LF.masked_softmax(s, mask)  # exactly 0 at padding, no gradient path through it
        emb = torch.bmm(alpha.unsqueeze(1), h)  # (k, 1, H)
        zb = linear(emb, w, b).squeeze(1)  # (k, K)
        bag = F.cross_entropy(zb, y, reduction="none")
        k, N, _ = z.shape
        inst_ce = s - z.gather(-1, y.view(k, 1, 1).expand(k, N, 1)).squeeze(-1)
        inst = (alpha * inst_ce).sum(1)  # α = 0 at padding
        if arch.reduction == "mean":
            inst = inst / n
        return bag + arch.lam * inst
    alpha = LF.masked_softmax(attention_scores(arch, p, h), mask)
    emb = torch.bmm(alpha.unsqueeze(1), h)
    zb = linear(emb, w, b).squeeze(1)
    return F.cross_entropy(zb, y, reduction="none")


def mlp_forward(arch: Arch, p: dict[str, Tensor], x: Tensor, drop: list[Tensor] | None):
    """MLP output ``(k, N, H)`` and what its backward needs."""
    inputs, acts = [], []
    h = x
    for i, (wn, bn) in enumerate(arch.layers):
        inputs.append(h)
        r = linear(h, p[wn], p[bn]).relu_()
        acts.append(r)
        h = r * drop[i] if drop is not None else r
    return h, (inputs, acts)


def mlp_backward(
    arch: Arch,
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


def head_loss_and_grads(
    arch: Arch, p: dict[str, Tensor], g: dict[str, Tensor], h: Tensor, mask: Tensor, y: Tensor, n: Tensor
) -> tuple[Tensor, Tensor]:
    """Pooling + classifier of one bag per run: per-run loss ``(k,)`` and d(sum of losses)/d h ``(k, N, H)``.

    Writes the head's parameter gradients into ``g``. Padded instances have α = 0, so every gradient
    term of theirs is exactly 0.
    """
    wn_c, bn_c = classifier_names(arch)
    Wc, bc = p[wn_c], p[bn_c]  # (k, H, K), (k, K)
    onehot = F.one_hot(y, Wc.shape[-1]).to(h.dtype)  # (k, K)
    if arch.kind == "loss_attention":
        z = linear(h, Wc, bc)  # (k, N, K)
        s = torch.logsumexp(z, dim=-1)  # (k, N)
        scores = s
    else:
        T = linear(h, p["attention.V.weight"], p["attention.V.bias"]).tanh_()  # (k, N, Hd)
        if arch.gated:
            G = linear(h, p["attention.U.weight"], p["attention.U.bias"]).sigmoid_()
            A = T * G
        else:
            A = T
        scores = torch.bmm(A, p["attention.w.weight"]).squeeze(-1)  # (k, N)
    alpha = masked_softmax(scores, mask)  # (k, N), 0 at padding
    emb = torch.bmm(alpha.unsqueeze(1), h)  # (k, 1, H)
    zb = linear(emb, Wc, bc).squeeze(1)  # (k, K)
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


def head_pieces(
    arch: Arch,
    p: dict[str, Tensor],
    g: dict[str, Tensor],
    pieces: list[tuple[Tensor | None, Tensor, Tensor]],
    y: Tensor,
    n: Tensor,
) -> tuple[Tensor, list[Tensor]]:
    """:func:`head_loss_and_grads` for bags given as row pieces (see ``VectorizedTrainer.levels``).

    ``pieces[0] = (None, h, mask)`` holds the first rows of all ``k`` runs; ``pieces[l] = (idx, h_l, mask_l)``
    further rows of the runs ``idx``. The softmax over a bag's instances spans all its pieces. Returns the
    per-run losses ``(k,)`` and d(sum of losses)/d ``h_l`` for every piece; writes the head's gradients into ``g``.
    """
    if len(pieces) == 1:
        loss, gh = head_loss_and_grads(arch, p, g, pieces[0][1], pieces[0][2], y, n)
        return loss, [gh]
    wn_c, bn_c = classifier_names(arch)
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
            z = linear(h, q[wn_c], q[bn_c])
            sc = torch.logsumexp(z, dim=-1)
            extra = (z,)
        else:
            T = linear(h, q["attention.V.weight"], q["attention.V.bias"]).tanh_()
            G = linear(h, q["attention.U.weight"], q["attention.U.bias"]).sigmoid_() if arch.gated else None
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


def loss_and_grads(
    arch: Arch,
    p: dict[str, Tensor],
    g: dict[str, Tensor],
    x: Tensor,
    mask: Tensor,
    y: Tensor,
    n: Tensor,
    drop: list[Tensor] | None,
) -> Tensor:
    """Per-run loss ``(k,)`` of one bag per run; writes d(sum of losses)/d(param) into ``g`` (same shapes as ``p``).

    The same function as :func:`reference_loss`, differentiated by hand: no autograd graph, and the weight
    gradients go straight into the persistent buffers ``g`` (no per-step allocation of ~R×100k floats).
    """
    h, cache = mlp_forward(arch, p, x, drop)
    loss, gh = head_loss_and_grads(arch, p, g, h, mask, y, n)
    mlp_backward(arch, p, g, gh, cache, drop)
    return loss
