"""Many independent one-bag-per-step runs trained at once with ``torch.func``: the generic batched backend.

The protocol of :class:`~lossattn.engine.manyruns.trainer.VectorizedTrainer` (``R`` runs of one method on one
dataset, one bag per optimiser step, Adam with L2 weight decay, selection on validation bags), but the per-step
gradient comes from PyTorch's own tools instead of a hand-written backward pass:

* the parameters of the ``R`` runs are stacked along a leading run dimension in the models' own layout
  (``torch.func.stack_module_state`` semantics: ``W1: (R, 256, D_in)``, ...); every run starts from exactly
  the parameters of the model passed in for it;
* at step ``t`` every active run ``r`` takes bag ``t`` of its own epoch order
  (``np.random.default_rng([seed_r, epoch]).permutation(n_r)``, as the :class:`~lossattn.engine.loop.Trainer`);
  the bags are zero-padded to a common size with a mask, and the step's per-run losses and gradients are
  ``torch.func.vmap(torch.func.grad_and_value(f))`` over the run dimension, where ``f`` is
  ``functional_call(model, params, (x, mask))`` on the REAL registered model followed by its own
  ``model.loss(...)`` (:class:`~lossattn.engine.manyruns.funcplan.FuncPlan`). Any bag model whose forward and
  loss vmap is therefore supported (every registered single-label bag model, with the MLP, identity or LeNet5
  extractor; :func:`~lossattn.engine.manyruns.funcplan.unsupported_reason` says what is not). Inside ``vmap``
  the models take their static-shape path (the extractor runs on every position and padding is zeroed,
  :meth:`lossattn.models.base.MILModel.embed`), so padding contributes exactly nothing;
* when the bags of a step differ a lot in size, the runs are split into buckets of similar bag size (one
  ``vmap`` call each, their parameters gathered; :meth:`FuncVectorizedTrainer.buckets`), so that a
  1,000-instance bag does not pad every run to 1,000 rows (MUSK2);
* Adam is ``torch._fused_adam_`` per class of runs with equally many training bags (the same update as
  ``torch.optim.Adam`` with L2 ``weight_decay``, as the hand-written backend); a run whose epoch is over is
  inactive for the remaining steps and gets no update; with ``TrainConfig.grad_clip`` each run's gradient is
  clipped by its own norm, as ``torch.nn.utils.clip_grad_norm_`` in the Trainer;
* dropout: the model runs in eval mode and every ``nn.Dropout`` module multiplies its input by a keep-mask
  drawn from the run's own generator ``np.random.default_rng([seed_r, DROPOUT_STREAM])`` for the run's real
  instances only (exactly the masks of the hand-written backend). So a run's result does not depend on which
  other runs share its group, and on the MLP models both backends train the same runs; with dropout > 0 both
  are a different (equally valid) random draw than the per-run Trainer's, with dropout 0 each run equals the
  Trainer's run to float rounding (tests/engine/test_manyruns_func.py);
* after every epoch all runs are evaluated on their validation bags (and with ``TrainConfig.oracle`` their test
  bags) by ``vmap`` over runs and bags, no gradient (:mod:`~lossattn.engine.manyruns.funceval`); the history rows
  and the selection key come from the task (:class:`~lossattn.engine.tasks.Task`: ``val_row``, ``oracle_row``,
  ``selection_key`` under ``TrainConfig.selection``, compared by :func:`~lossattn.engine.tasks.better`), as in
  the Trainer; at the end every model gets its selected parameters back and is evaluated with the ordinary
  :func:`~lossattn.engine.loop.evaluate`.

Speed (benchmarks/manyruns_func.py, benchmarks/README.md): on the Table 1 protocol (50 runs, one thread) this
backend needs 1.85-2.1x the CPU time per training epoch of the hand-written one on MUSK1 and 1.4-1.5x on MUSK2,
with identical results. Every step runs the models' Python forward and loss (~350 ATen ops) under ``vmap`` +
``grad``, a fixed ~3 ms per call against ~0.3 ms for a hand-written step of one run, and the batched products
cost more (MUSK1: whole bags padded to 6.5 rows per real row, where the hand-written backend splits most steps'
rows into levels). So the hand-written backend stays for the models it covers (Loss-Attention and softmax
attention on the MLP), and this one is the generic path for every other bag model (1.7-2.1x faster than the
per-run Trainer for ``instance_max`` on MUSK1/MUSK2); :func:`~lossattn.engine.manyruns.fit.fit_many` with
``backend="auto"`` picks them in that order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from lossattn.engine.config import TrainConfig, epoch_schedule
from lossattn.engine.manyruns.adam import adam_reference, fused_adam_available
from lossattn.engine.manyruns.funceval import EpochEval, epoch_predictions, eval_batches, partition
from lossattn.engine.manyruns.funcplan import FuncPlan, config_reason, hyperparameters, probe_reason, structure_reason
from lossattn.engine.manyruns.group import (
    copy_improved,
    dropout_generators,
    epoch_keep_masks,
    epoch_tables,
    finish_runs,
    order_runs,
    pack_training,
    updates_in_input_order,
)
from lossattn.engine.results import EvalResult, FitResult
from lossattn.engine.runtime import flush_denormals, resolve_device
from lossattn.engine.sources import make_source
from lossattn.engine.tasks import better, task_for
from lossattn.models.base import MILModel

__all__ = ["FuncVectorizedTrainer", "clip_per_run"]


class FuncVectorizedTrainer:
    """Train ``R`` independent runs of one bag model as one batched ``torch.func`` computation.

    Args:
        models: the ``R`` initialised models (built like :func:`lossattn.protocols.runs.prepare_run` does:
            ``torch.manual_seed(seed_r)`` then ``create_model``); same class, architecture and hyperparameters.
            At the end each holds its run's selected parameters.
        config: the shared :class:`TrainConfig` (``batch_size`` must be 1).
        seeds: the ``R`` run seeds (batch order, as the Trainer, and the per-run dropout generators).
        max_buckets: at most this many ``vmap`` calls per step (1 = pad every bag to the step's largest).
        bucket_overhead: cost of one more call, in padded instance rows.
        gather_cost: cost per run, in instance rows, of gathering its parameters into a bucket and its gradient
            back. (The defaults were measured with the MLP: on MUSK1, bags of 1-40 instances, one padded call per
            step is as fast as any split, since a ``vmap`` call costs ~2-3 ms and a small-bag step is bound by
            the runs' weights; on MUSK2, bags of 1-1,044, the split cuts the padded rows from ~13 to ~1.4 per real
            row and the training time ~6x, 29.9 to 4.9 CPU s per epoch of 50 runs.)
        eval_budget: bytes of per-instance activations one batched evaluation call may use.

    Raises:
        ValueError: a config or model it cannot train (the message says why), models that differ in class,
            hyperparameters, parameter shapes or buffers, or one seed per model missing.
    """

    def __init__(
        self,
        models: Sequence[MILModel],
        config: TrainConfig,
        seeds: Sequence[int],
        *,
        max_buckets: int = 4,
        bucket_overhead: int = 1000,
        gather_cost: int = 20,
        eval_budget: int = 256 * 2**20,
    ) -> None:
        config.validate()
        models = list(models)
        if not models or len(models) != len(seeds):
            raise ValueError(f"need one seed per model, got {len(models)} models and {len(seeds)} seeds")
        reason = config_reason(config) or structure_reason(models[0])
        if reason is not None:
            raise ValueError(f"the torch.func engine cannot train this run: {reason}")

        def signature(m: MILModel) -> tuple:
            return type(m), hyperparameters(m), [(n, tuple(p.shape)) for n, p in m.named_parameters()]

        first = signature(models[0])
        for m in models[1:]:
            if signature(m) != first:
                raise ValueError("all runs of a torch.func group must share the model class and its hyperparameters")
        for name, buf in models[0].named_buffers():
            if any(not torch.equal(buf, dict(m.named_buffers())[name]) for m in models[1:]):
                raise ValueError(f"the runs' buffer {name!r} differs (buffers are shared by the group, not stacked)")
        try:
            self.plan = FuncPlan(models[0])
        except ValueError as exc:
            raise ValueError(f"the torch.func engine cannot train this run: {exc}") from None
        reason = probe_reason(self.plan)
        if reason is not None:
            raise ValueError(f"the torch.func engine cannot train this run: {reason}")
        self.models = models
        self.config = config
        self.seeds = [int(s) for s in seeds]
        self.device = resolve_device(config.device)
        self.plan.base.to(self.device)
        self.task = task_for(models[0])
        self.max_buckets = max(1, int(max_buckets))
        self.bucket_overhead = float(bucket_overhead)
        self.gather_cost = float(gather_cost)
        self.eval_budget = int(eval_budget)
        self.timings: dict[str, float] = {}
        self.stats: dict[str, Any] = {}
        keep_dims = 0 if self.plan.width else None
        self._grad_step = vmap(grad_and_value(self.plan.loss, has_aux=True), in_dims=(0, 0, 0, 0, keep_dims))
        self._predict = vmap(vmap(self.plan.predict, in_dims=(None, 0, 0, 0)), in_dims=(0, 0, 0, 0))

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        train_sets: Sequence[Any],
        val_sets: Sequence[Any] | None = None,
        test_sets: Sequence[Any] | None = None,
    ) -> list[FitResult]:
        """Train every run on its ``train_sets[r]``, select on ``val_sets[r]``, report on ``test_sets[r]``.

        Returns one :class:`FitResult` per run, in input order, as :meth:`Trainer.fit` would: the history rows
        hold the Trainer's keys (schedule, ``train_loss``, ``train_<term>`` per loss term, ``train_accuracy``,
        the task's validation and oracle rows, ``selected_epoch``, ``seconds``: the group's time so far divided
        by its runs);
        ``extra == {"engine": "func", "group_size": R}``. The decision threshold is not applied here
        (:func:`~lossattn.engine.manyruns.fit.fit_many` does, as for every backend).
        """
        with flush_denormals(self.config.flush_denormal):
            return self._fit(train_sets, val_sets, test_sets)

    def _check_data(self, models: Sequence[MILModel], sets: Sequence[Any], what: str) -> None:
        for ds, model in zip(sets, models, strict=True):
            if ds is not None and len(ds):
                self.task.check_data(model, make_source(ds), what)

    def _fit(self, train_sets, val_sets, test_sets) -> list[FitResult]:
        R = len(self.models)
        group = order_runs(self.models, self.seeds, train_sets, val_sets, test_sets, self.config.oracle)
        for sets, what in ((group.trains, "training"), (group.vals, "validation"), (group.tests, "test")):
            self._check_data(group.models, sets, what)
        c, plan, dev = self.config, self.plan, self.device
        start, cpu_start = time.perf_counter(), time.process_time()
        if c.threads:
            torch.set_num_threads(c.threads)
        n_sorted, seeds, classes = group.n_sorted, group.seeds, group.classes

        names = plan.names
        with torch.no_grad():
            params = {
                n: torch.stack([dict(m.named_parameters())[n].detach() for m in group.models]).to(dev).contiguous()
                for n in names
            }
        exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        gbuf = {n: torch.zeros_like(p) for n, p in params.items()}  # gradients of bucketed steps
        steps = [torch.zeros((), dtype=torch.float32, device=dev) for _ in classes]
        best = {n: p.clone() for n, p in params.items()}
        fused = fused_adam_available()
        self.stats = {"steps": 0, "bucketed_steps": 0, "calls": 0, "padded_rows": 0, "real_rows": 0, "updates": []}

        packed = pack_training(group, dev)
        ev = eval_batches(group.vals, group.ev_tests, dev, self.bucket_overhead, self.eval_budget)

        p_drop, width = plan.p_drop, plan.width
        gens = dropout_generators(seeds) if width else []

        histories: list[list[dict[str, Any]]] = [[] for _ in range(R)]
        best_key: list[tuple[float, float] | None] = [None] * R
        best_epoch = [-1] * R
        t_train = t_eval = cpu_train = 0.0
        T = packed.T
        adam_state = [
            ([params[n][a:b] for n in names], [exp_avg[n][a:b] for n in names], [exp_avg_sq[n][a:b] for n in names])
            for a, b in classes
        ]

        for epoch in range(c.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            sched = epoch_schedule(c, epoch)
            size, fstart, ylab = epoch_tables(group, packed, epoch)
            # the run's keep-masks of the epoch, drawn as the hand-written backend draws them
            drop = epoch_keep_masks(gens, packed, size, width, p_drop, dev) if width else None
            sums: dict[str, Tensor] = {}  # per run: summed loss terms ("total", "bag"...) and hits ("correct")
            for t in range(T):
                k = int(packed.active_at[t])
                data = (packed.X, packed.pad_row, size, fstart, ylab, drop)
                grads = self._step(t, k, params, gbuf, data, sums)
                if c.grad_clip:
                    clip_per_run(grads, float(c.grad_clip))
                active = [i for i, (a, _) in enumerate(classes) if n_sorted[a] > t]
                self._adam(active, classes, adam_state, grads, steps, sched, fused)
            t1 = time.perf_counter()
            t_train += t1 - t0
            cpu_train += time.process_time() - c0

            n_float = torch.from_numpy(n_sorted).to(dev, torch.float32)
            means = {key: (v / n_float).tolist() for key, v in sums.items()}
            train_loss = means.pop("total")
            train_acc = means.pop("correct")
            bad = [seeds[r] for r in range(R) if not math.isfinite(train_loss[r])]
            if bad:
                raise FloatingPointError(
                    f"non-finite training loss at epoch {epoch} in the run(s) with seed {bad} with learning rate "
                    f"{c.lr:g}: lower the learning rate (TrainConfig.lr / --lr) or check the features"
                )
            preds = epoch_predictions(self._predict, params, ev, plan.instance_shape) if ev is not None else None
            improved = []
            for r in range(R):
                # the Trainer's training row: the total, every other loss term, the accuracy
                row: dict[str, Any] = {"epoch": epoch, **sched, "train_loss": train_loss[r]}
                row.update({f"train_{key}": means[key][r] for key in sorted(means)})
                row["train_accuracy"] = train_acc[r]
                candidate = (0.0, -float(epoch))  # no validation: the last epoch wins
                if group.has_val[r]:
                    result = _result(ev, preds, r, slice(0, int(ev.n_val[r])))
                    row.update(self.task.val_row(result))
                    candidate = self.task.selection_key(result, c.selection)
                if group.oracle_test[r]:
                    row.update(self.task.oracle_row(_result(ev, preds, r, slice(int(ev.n_val[r]), None))))
                if better(candidate, best_key[r]):
                    best_key[r], best_epoch[r] = candidate, epoch
                    improved.append(r)
                row["selected_epoch"] = best_epoch[r]
                row["seconds"] = (time.perf_counter() - start) / R
                histories[r].append(row)
            copy_improved(best, params, improved, dev)
            t_eval += time.perf_counter() - t1

        self.stats["updates"] = updates_in_input_order(group, steps)  # optimizer steps per run, in input order
        # every run's model gets its selected parameters; final metrics from the ordinary evaluate()
        t2 = time.perf_counter()
        results = finish_runs(
            group, lambda r: {n: b[r] for n, b in best.items()}, best_epoch, histories, c, dev, "func"
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
            res.seconds = total / R
        return results

    # ------------------------------------------------------------------ one step
    def buckets(self, sz: np.ndarray) -> list[np.ndarray]:
        """The active runs of a step (bag sizes ``sz (k,)``) split into buckets of similar size, one call each.

        Cost model in instance rows: a bucket costs its runs × its largest bag plus ``bucket_overhead``; with more
        than one bucket every run also costs ``gather_cost`` (its parameters are gathered and its gradient
        scattered back). :func:`~lossattn.engine.manyruns.funceval.partition` over the distinct sizes.
        """
        k = sz.shape[0]
        if self.max_buckets == 1 or k * int(sz.max()) - int(sz.sum()) <= self.bucket_overhead + k * self.gather_cost:
            return [np.arange(k)]
        u, inv, cnt = np.unique(sz, return_inverse=True, return_counts=True)
        cum = np.concatenate([[0], np.cumsum(cnt)])
        W = (cum[None, 1:] - cum[:-1, None]).astype(np.float64)  # runs with sizes u[i..j]
        ends = partition(u.astype(np.float64), W, self.max_buckets, self.bucket_overhead, self.gather_cost)
        if len(ends) == 1:
            return [np.arange(k)]
        part_of = np.searchsorted(np.asarray(ends), inv)  # bucket of every run
        return [np.flatnonzero(part_of == j) for j in range(len(ends))]

    def _inputs(self, runs: np.ndarray, t: int, data: tuple) -> tuple:
        """Padded bags ``x (k, 1, N, *S)``, ``mask (k, 1, N)``, labels ``(k, 1)`` and keep-masks ``(k, N, W)``."""
        X, pad_row, size, fstart, ylab, drop = data
        dev = self.device
        sz = size[runs, t]
        N = int(sz.max())
        rows = np.arange(N)
        valid = rows[None, :] < sz[:, None]
        fidx = np.where(valid, fstart[runs, t][:, None] + rows, pad_row)
        k = len(runs)
        x = X.index_select(0, torch.from_numpy(fidx.reshape(-1)).to(dev)).view(k, 1, N, *self.plan.instance_shape)
        mask = torch.from_numpy(valid).to(dev).view(k, 1, N)
        y = torch.from_numpy(ylab[runs, t]).to(dev).view(k, 1)
        keep = None
        if drop is not None:
            kall, dstart, dpad = drop
            didx = np.where(valid, dstart[runs, t][:, None] + rows, dpad)
            keep = kall.index_select(0, torch.from_numpy(didx.reshape(-1)).to(dev)).view(k, N, -1)
            keep = keep.to(torch.float32).mul_(1.0 / (1.0 - self.plan.p_drop))
        self.stats["padded_rows"] += k * N
        self.stats["real_rows"] += int(sz.sum())
        self.stats["calls"] += 1
        return x, mask, y, keep

    def _step(self, t, k, params, gbuf, data, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """Gradients ``(k, ...)`` of step ``t`` for the ``k`` active runs; the runs' loss terms and hits are added
        to ``sums[name] (R,)`` (``"total"``: the loss)."""
        size = data[2]
        R = next(iter(params.values())).shape[0]
        buckets = self.buckets(size[:k, t])
        self.stats["steps"] += 1
        if len(buckets) == 1:
            p = params if k == R else {n: v[:k] for n, v in params.items()}
            grads, (loss, aux) = self._grad_step(p, *self._inputs(np.arange(k), t, data))
            for key, v in {"total": loss, **aux}.items():
                _sum_of(sums, key, R, self.device)[:k] += v
            return grads
        self.stats["bucketed_steps"] += 1
        for runs in buckets:
            idx = torch.from_numpy(runs).to(self.device)
            p = {n: v.index_select(0, idx) for n, v in params.items()}
            g, (loss, aux) = self._grad_step(p, *self._inputs(runs, t, data))
            for n in params:
                gbuf[n].index_copy_(0, idx, g[n])
            for key, v in {"total": loss, **aux}.items():
                _sum_of(sums, key, R, self.device).index_add_(0, idx, v)
        return {n: v[:k] for n, v in gbuf.items()}

    def _adam(self, active, classes, adam_state, grads, steps, sched, fused) -> None:
        """One Adam step (``torch.optim.Adam`` math, L2 weight decay) of the active classes of runs."""
        if not active:
            return
        ps, gs, ms, vs, sts = [], [], [], [], []
        for i in active:
            a, b = classes[i]
            p, m, v = adam_state[i]
            steps[i].add_(1)
            ps += p
            gs += [grads[n][a:b] for n in self.plan.names]
            ms += m
            vs += v
            sts += [steps[i]] * len(p)
        kw = dict(
            lr=sched["lr"], beta1=sched["beta1"], beta2=sched["beta2"], weight_decay=self.config.weight_decay, eps=1e-8
        )
        if fused:
            torch._fused_adam_(ps, gs, ms, vs, [], sts, amsgrad=False, maximize=False, **kw)
        else:
            adam_reference(ps, gs, ms, vs, sts, **kw)


def _sum_of(sums: dict[str, Tensor], key: str, R: int, device: torch.device) -> Tensor:
    """The per-run sum ``(R,)`` of ``key``, created as zeros at its first step of the epoch."""
    if key not in sums:
        sums[key] = torch.zeros(R, device=device)
    return sums[key]


def _result(ev: EpochEval, preds: list, r: int, bags: slice) -> EvalResult:
    """Run ``r``'s evaluation of its bags ``bags`` (validation: the first ``n_val``, oracle test: the rest)."""
    probs, losses = preds[r]
    return EvalResult(loss=float(losses[bags].mean()), labels=ev.labels[r][bags], probabilities=probs[bags])


def clip_per_run(grads: dict[str, Tensor], max_norm: float) -> None:
    """Scale each run's gradient to total 2-norm ≤ ``max_norm`` (``torch.nn.utils.clip_grad_norm_`` per run).

    ``grads[name]`` is ``(k, ...)``; run ``i``'s norm is ``sqrt(sum over names of |grads[name][i]|²)`` and its
    gradients are multiplied by ``min(1, max_norm / (norm + 1e-6))``.
    """
    k = next(iter(grads.values())).shape[0]
    sq = sum(g.reshape(k, -1).pow(2).sum(1) for g in grads.values())  # (k,)
    coef = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
    for g in grads.values():
        g.mul_(coef.view(k, *([1] * (g.dim() - 1))))
