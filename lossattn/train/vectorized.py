"""Many independent one-bag-per-step runs trained as ONE batched computation.

The classic-MIL protocol (Table 1) repeats a tiny training run hundreds of times: 10 folds × 5 repeats ×
100 epochs, one bag per optimiser step, an MLP of ~100k parameters. Run alone, each step costs a few
milliseconds of Python and autograd overhead for a few microseconds of arithmetic. This engine trains
``R`` such runs of the same method on the same dataset at once:

* the parameters of the ``R`` runs are stacked along a leading run dimension (``W1: (R, 256, D_in)``, ...)
  and every run starts from exactly the parameters the :class:`~lossattn.train.Trainer` would give it
  (the caller builds each run's model under ``torch.manual_seed(run seed)``);
* at step ``t`` run ``r`` takes bag ``t`` of *its own* epoch order
  (``np.random.default_rng([seed_r, epoch]).permutation(n_r)``, as the Trainer); the bags of the runs
  are zero-padded to a common size with a mask (padding gets weight exactly 0 and contributes nothing to
  any loss or gradient), and the forward pass is a handful of ``bmm`` calls over the run dimension;
* the loss is the *sum* of the runs' per-bag losses, so each run's gradient is its own;
* Adam is ``torch._fused_adam_`` (the kernel the Trainer's ``fused=True`` Adam runs) on the runs' slices
  of the stacked tensors, with one step count per run (runs with equally many training bags share it),
  so it is the same update as ``torch.optim.Adam`` with L2 ``weight_decay``; when an epoch has more steps
  than a run has bags, that run is inactive for the remaining steps and gets no update at all;
* dropout masks come from one ``torch.Generator`` per run seeded from the run seed and are drawn for the
  run's real instances only, so a run's result does not depend on which other runs share its group
  (they are not the Trainer's dropout masks: with dropout > 0 the engine is a different, equally valid
  random draw; with dropout 0 it reproduces the Trainer to float rounding);
* after every epoch all runs are evaluated on their validation bags (and, with ``TrainConfig.oracle``,
  their test bags) in one no-grad pass; each run keeps the parameters of its epoch with the lowest
  validation error, ties broken by the lowest validation loss (the Trainer's rule,
  :func:`lossattn.train.trainer._better`). Test bags only feed the labelled per-epoch "oracle" figure;
  they never influence selection;
* at the end every run's model gets its selected parameters back and is evaluated with the ordinary
  :func:`~lossattn.train.trainer.evaluate`, so the reported metrics come from the same code as the
  Trainer's.

When the runs' bags at a step differ a lot in size (MUSK2: 1 to 1,044 instances), the step's runs are
split into up to ``max_buckets`` size buckets, each padded only to its own largest bag.

Supported: ``LossAttentionMIL`` (any λ, ``"mean"``/``"sum"`` reduction) and ``AttentionMIL`` with the
softmax head (plain and gated), each on the MLP extractor; one bag per step (``batch_size=1``), no
temporal ensemble, no gradient clipping, no AMP. :func:`unsupported_reason` says why a model/config
is not supported; :func:`lossattn.train.protocols.run_experiment` with ``engine="auto"`` then uses the
per-run Trainer.
"""

from __future__ import annotations

import math
import time
import types
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
from lossattn.train.trainer import FitResult, Trainer, _better, evaluate

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


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """Per-run ``F.linear``: ``x (k, N, in)``, ``w (k, out, in)``, ``b (k, out)`` → ``(k, N, out)``."""
    if b is None:
        return torch.bmm(x, w.transpose(1, 2))
    return torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))


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
    return torch.bmm(a, p["attention.w.weight"].transpose(1, 2)).squeeze(-1)  # (k, N)


def _classifier(arch: _Arch, p: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    if arch.kind == "loss_attention":
        return p["attention.classifier.weight"], p["attention.classifier.bias"]
    return p["classifier.weight"], p["classifier.bias"]


def _train_loss(
    arch: _Arch, p: dict[str, Tensor], x: Tensor, mask: Tensor, y: Tensor, n: Tensor, drop: list[Tensor] | None
) -> Tensor:
    """Per-run loss ``(k,)`` of one bag per run: ``x (k, N, D)``, ``mask (k, N)``, ``y (k,)``, ``n (k,)`` sizes."""
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


def _flat(ds) -> tuple[Tensor, np.ndarray]:
    x, offsets = ds.to_flat()
    return x.reshape(x.shape[0], -1), np.diff(offsets)


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
    return _EvalSet(
        t(X), t(bag_id), t(inst_label), t(labels), t(sizes), t(is_val), t(is_test), n_val, n_test, nb
    )


@torch.no_grad()
def _eval_chunk(arch: _Arch, p: dict[str, Tensor], ev: _EvalSet, sl: slice) -> tuple[Tensor, Tensor]:
    """Bag probabilities ``(c, nb+1, K)`` and per-bag losses ``(c, nb+1)`` of runs ``sl`` (no dropout)."""
    x = ev.x[sl]
    c, M, _ = x.shape
    nb1 = ev.nb + 1
    gid = (ev.bag_id[sl] + torch.arange(c, device=x.device).unsqueeze(1) * nb1).reshape(-1)  # (c*M,)
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
    labels = ev.labels[sl]
    loss = F.cross_entropy(zb.reshape(-1, K), labels.reshape(-1), reduction="none").view(c, nb1)
    if arch.kind == "loss_attention":
        inst_ce = s - z.gather(-1, ev.inst_label[sl].unsqueeze(-1)).squeeze(-1)
        inst = torch.zeros(c * nb1, device=x.device).index_add_(0, gid, alpha * inst_ce.reshape(-1)).view(c, nb1)
        if arch.reduction == "mean":
            inst = inst / ev.sizes[sl]
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
        max_buckets: at most this many size buckets per step (1 = always pad to the step's largest bag).
        bucket_overhead: cost of one more bucket, in padded instance rows, when choosing buckets.
        eval_budget: bytes of activations one batched evaluation pass may use (runs are chunked to fit).
    """

    def __init__(
        self,
        models: Sequence[MILModel],
        config: TrainConfig,
        seeds: Sequence[int],
        *,
        max_buckets: int = 3,
        bucket_overhead: int = 256,
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
        self.max_buckets = max(1, min(int(max_buckets), 3))
        self.bucket_overhead = int(bucket_overhead)
        self.eval_budget = int(eval_budget)
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ schedule (the Trainer's)
    def _schedule(self, epoch: int) -> dict[str, float]:
        return Trainer._schedule(types.SimpleNamespace(config=self.config), epoch)  # type: ignore[arg-type]

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

        # stacked parameters (nn.Linear layout) and Adam state
        params = {
            name: torch.stack([dict(m.named_parameters())[name].detach().to(dev) for m in models]).contiguous()
            for name in arch.names
        }
        for p in params.values():
            p.requires_grad_(True)
        exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        steps = [torch.zeros((), dtype=torch.float32, device=dev) for _ in classes]
        best = {n: p.detach().clone() for n, p in params.items()}
        fused = _fused_available()

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
        ev = _build_eval(vals, ev_tests, dev) if (any(has_val) or any(oracle_test)) else None

        p_drop = arch.dropout
        gens = [torch.Generator().manual_seed(_dropout_seed(s)) for s in seeds] if p_drop > 0 else []
        width = sum(arch.widths)
        cuts = np.cumsum([0] + arch.widths)

        histories: list[list[dict[str, Any]]] = [[] for _ in range(R)]
        best_key: list[tuple[float, float] | None] = [None] * R
        best_epoch = [-1] * R
        t_train = t_eval = 0.0
        T = int(n_sorted[0])
        active_at = np.array([(n_sorted > t).sum() for t in range(T)], dtype=np.int64)
        size_tab = np.stack([_pad(s, T) for s in sizes])
        start_tab = np.stack([_pad(s, T) for s in bag_start])
        label_tab = np.stack([_pad(s, T) for s in labels])

        for epoch in range(c.epochs):
            t0 = time.perf_counter()
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
                keep = torch.cat(
                    [torch.rand((int(counts[r]), width), generator=gens[r]) >= p_drop for r in range(R)]
                    + [torch.zeros((1, width), dtype=torch.bool)]
                ).to(dev)
                drop_rows = (keep, dstart, int(dbase[-1]))
            loss_sum = torch.zeros(R, device=dev)
            for t in range(T):
                k = int(active_at[t])
                self._step(
                    t, k, params, X, pad_row, size, fstart, ylab, drop_rows, loss_sum, cuts, p_drop, dev
                )
                active = [i for i, (a, b) in enumerate(classes) if n_sorted[a] > t]
                self._adam(params, exp_avg, exp_avg_sq, steps, classes, active, sched["lr"], b1, b2, fused)
            t1 = time.perf_counter()
            t_train += t1 - t0

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
                with torch.no_grad():
                    for n, p in params.items():
                        best[n].index_copy_(0, idx, p.detach().index_select(0, idx))
            t_eval += time.perf_counter() - t1

        # every run's model gets its selected parameters; final metrics from the ordinary evaluate()
        t2 = time.perf_counter()
        results: list[FitResult | None] = [None] * R
        elapsed = time.perf_counter() - start
        for r in range(R):
            model = models[r]
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(best[n][r].to(p.device))
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
            "runs": R,
            "steps": int(c.epochs * T),
        }
        for res in results:
            assert res is not None
            res.seconds = total / R
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ one step
    def _buckets(self, sz: np.ndarray) -> list[np.ndarray]:
        """Split the step's runs (positions in ``sz``) into ≤ max_buckets groups padded separately."""
        k = sz.shape[0]
        if self.max_buckets == 1 or k < 2:
            return [np.arange(k)]
        srt = np.argsort(sz, kind="stable")
        s = sz[srt].astype(np.int64)
        a = self.bucket_overhead
        best_cost, best_cuts = a + k * int(s[-1]), ()
        i = np.arange(1, k)
        cost2 = 2 * a + i * s[i - 1] + (k - i) * s[-1]
        j2 = int(np.argmin(cost2))
        if cost2[j2] < best_cost:
            best_cost, best_cuts = int(cost2[j2]), (int(i[j2]),)
        if self.max_buckets >= 3 and k >= 3:
            ii, jj = np.meshgrid(i, i, indexing="ij")
            ok = ii < jj
            cost3 = 3 * a + ii * s[ii - 1] + (jj - ii) * s[jj - 1] + (k - jj) * s[-1]
            cost3 = np.where(ok, cost3, np.iinfo(np.int64).max)
            f = int(np.argmin(cost3))
            if cost3.flat[f] < best_cost:
                best_cuts = (int(ii.flat[f]), int(jj.flat[f]))
        if not best_cuts:
            return [np.arange(k)]
        return [np.sort(g) for g in np.split(srt, list(best_cuts))]

    def _step(self, t, k, params, X, pad_row, size, fstart, ylab, drop_rows, loss_sum, cuts, p_drop, dev):
        arch = self.arch
        sz_all = size[:k, t]
        groups = self._buckets(sz_all)
        total = None
        for g in groups:
            whole = len(groups) == 1
            sz = sz_all[g]
            N = int(sz.max())
            ar = np.arange(N)
            valid = ar[None, :] < sz[:, None]
            fidx = np.where(valid, fstart[g, t][:, None] + ar, pad_row)
            x = X.index_select(0, torch.from_numpy(fidx.reshape(-1)).to(dev)).view(len(g), N, -1)
            mask = torch.from_numpy(valid).to(dev)
            y = torch.from_numpy(ylab[g, t]).to(dev)
            n = torch.from_numpy(sz.astype(np.float32)).to(dev)
            drop = None
            if drop_rows is not None:
                keep, dstart, dpad = drop_rows
                didx = np.where(valid, dstart[g, t][:, None] + ar, dpad)
                rows = keep.index_select(0, torch.from_numpy(didx.reshape(-1)).to(dev)).view(len(g), N, -1)
                scaled = rows.to(torch.float32).mul_(1.0 / (1.0 - p_drop))
                drop = [scaled[..., int(cuts[i]) : int(cuts[i + 1])] for i in range(len(cuts) - 1)]
            if whole:
                p = params if k == len(loss_sum) else {nm: v[:k] for nm, v in params.items()}
            else:
                gi = torch.from_numpy(g).to(dev)
                p = {nm: v.index_select(0, gi) for nm, v in params.items()}
            loss = _train_loss(arch, p, x, mask, y, n, drop)
            with torch.no_grad():
                if whole:
                    loss_sum[:k] += loss.detach()
                else:
                    loss_sum.index_add_(0, gi, loss.detach())
            total = loss.sum() if total is None else total + loss.sum()
        total.backward()

    def _adam(self, params, exp_avg, exp_avg_sq, steps, classes, active, lr, b1, b2, fused) -> None:
        c = self.config
        ps, gs, ms, vs, sts = [], [], [], [], []
        for i in active:
            a, b = classes[i]
            steps[i] += 1
            for n, p in params.items():
                ps.append(p.data[a:b])
                gs.append(p.grad[a:b])
                ms.append(exp_avg[n][a:b])
                vs.append(exp_avg_sq[n][a:b])
                sts.append(steps[i])
        kw = dict(lr=lr, beta1=b1, beta2=b2, weight_decay=c.weight_decay, eps=1e-8)
        with torch.no_grad():
            if fused:
                torch._fused_adam_(ps, gs, ms, vs, [], sts, amsgrad=False, maximize=False, **kw)
            else:
                _adam_reference(ps, gs, ms, vs, sts, **kw)
        for p in params.values():
            p.grad = None

    # ------------------------------------------------------------------ per-epoch evaluation
    def _evaluate_epoch(self, params: dict[str, Tensor], ev: _EvalSet, R: int) -> dict[str, list[float]]:
        width = max(self.arch.widths)
        per_run = ev.x.shape[1] * (ev.x.shape[2] + 3 * width) * 4
        chunk = max(1, min(R, self.eval_budget // max(per_run, 1)))
        probs, losses = [], []
        with torch.no_grad():
            for a in range(0, R, chunk):
                sl = slice(a, min(R, a + chunk))
                pr, lo = _eval_chunk(self.arch, {n: p.detach()[sl] for n, p in params.items()}, ev, sl)
                probs.append(pr)
                losses.append(lo)
        prob = torch.cat(probs)
        loss = torch.cat(losses)
        correct = (prob.argmax(-1) == ev.labels).cpu().numpy()
        loss_np = loss.double().cpu().numpy()
        is_val, is_test = ev.is_val.cpu().numpy(), ev.is_test.cpu().numpy()
        out: dict[str, list[float]] = {"val_loss": [], "val_accuracy": [], "test_accuracy": []}
        for r in range(R):
            nv, nt = int(ev.n_val[r]), int(ev.n_test[r])
            out["val_accuracy"].append(int(correct[r][is_val[r]].sum()) / nv if nv else float("nan"))
            out["val_loss"].append(float(loss_np[r][is_val[r]].mean()) if nv else float("nan"))
            out["test_accuracy"].append(int(correct[r][is_test[r]].sum()) / nt if nt else float("nan"))
        return out


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


def _dropout_seed(seed: int) -> int:
    """Seed of a run's dropout generator: a function of the run seed only."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xD40]).generate_state(1, np.uint64)[0] >> 1)


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
    from lossattn.train.protocols import prepare_split, run_seed

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
            record: dict[str, Any] = {
                "method": spec.method,
                "model": mcfg.model,
                "repeat": spec.repeat,
                "fold": spec.fold,
                "seed": seed,
                "selected_epoch": fit.selected_epoch,
                "epochs": train_cfg.epochs,
                "n_train": len(train),
                "n_val": 0 if val is None else len(val),
                "n_test": len(test),
                "test_accuracy": fit.test.accuracy,
                "test_auc": fit.test.auc,
                "test_loss": fit.test.loss,
                "val_accuracy": None if fit.val is None else fit.val.accuracy,
                "val_loss": None if fit.val is None else fit.val.loss,
                "oracle_test_accuracy": fit.oracle_test_accuracy,
                "last_epoch_test_accuracy": fit.history[-1].get("test_accuracy"),
                "seconds": fit.seconds,
            }
            retrieval = fit.test.retrieval()
            if retrieval is not None:
                record["instance_retrieval"] = {str(t): v for t, v in retrieval.items()}
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
