"""Many independent one-bag-per-step runs trained as ONE batched computation.

The classic-MIL protocol (Table 1) repeats a tiny training run hundreds of times: 10 folds × 5 repeats ×
100 epochs, one bag per optimiser step, an MLP of ~100k parameters. Run alone, each step costs a few
milliseconds of Python and autograd overhead for a few microseconds of arithmetic. This engine trains
``R`` such runs of the same method on the same dataset at once:

* the parameters of the ``R`` runs are stacked along a leading run dimension (2-D weights transposed,
  ``W1: (R, D_in, 256)``, ...) and every run starts from exactly the parameters the
  :class:`~lossattn.engine.Trainer` would give it (the caller builds each run's model under
  ``torch.manual_seed(run seed)``);
* at step ``t`` run ``r`` takes bag ``t`` of *its own* epoch order
  (``np.random.default_rng([seed_r, epoch]).permutation(n_r)``, as the Trainer); the bags of the runs
  are zero-padded to a common size with a mask (padding gets weight exactly 0 and contributes nothing to
  any loss or gradient), and the forward pass is a handful of ``bmm`` calls over the run dimension;
* the loss is the *sum* of the runs' per-bag losses, so each run's gradient is its own. The backward pass
  is written out by hand (:func:`loss_and_grads`; tested against autograd) so that the ~R×100k weight
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
  their test bags) in batched no-grad passes (runs with similar numbers of instances together); the history
  rows and the selection key come from the task as in the Trainer (``val_row``, ``oracle_row`` and
  ``selection_key`` under ``TrainConfig.selection``, compared by :func:`lossattn.engine.tasks.better`; the
  default keeps the epoch with the lowest validation error, ties broken by the lowest validation loss).
  Test bags only feed the labelled per-epoch "oracle" figure; they never influence selection;
* at the end every run's model gets its selected parameters back and is evaluated with the ordinary
  :func:`~lossattn.engine.loop.evaluate`, so the reported metrics come from the same code as the
  Trainer's.

When the runs' bags at a step differ a lot in size (MUSK2: 1 to 1,044 instances), the MLP does not pad
every bag to the longest: the first rows of all runs go through it as one dense batch, the further rows
only for the runs whose bags are that long (:meth:`~lossattn.engine.manyruns.trainer.VectorizedTrainer.levels`).

Why the backward is written by hand: PyTorch's own tool for many small models, ``torch.func.functional_call``
+ ``vmap`` + ``grad`` over stacked parameters (:class:`~lossattn.engine.manyruns.func.FuncVectorizedTrainer`,
which trains the same runs with the same data path, dropout masks, Adam and selection, to float rounding), was
measured on the Table 1 protocol (benchmarks/manyruns_func.py: 50 runs, one thread, CPU seconds per training
epoch) at 1.85-2.1x this engine's time on MUSK1 (small bags: a fixed ~3 ms of dispatch per step for the models'
Python forward and loss under ``vmap`` + ``grad``, and whole bags padded where this engine splits rows into
levels) and 1.4-1.5x on MUSK2. So this engine keeps its hand-written gradients for the models below; every
other single-label bag model is batched by the torch.func engine.

Supported: ``LossAttentionMIL`` (any λ, ``"mean"``/``"sum"`` reduction) and ``AttentionMIL`` with the
softmax head (plain and gated), each on the MLP extractor; one bag per step (``batch_size=1``), no
temporal ensemble, no gradient clipping, no AMP. :func:`unsupported_reason` says why a model/config
is not supported; :func:`lossattn.protocols.fanout.run_experiment` with ``engine="auto"`` then uses the
torch.func engine where that applies, else the per-run Trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lossattn.engine.config import TrainConfig, epoch_schedule
from lossattn.engine.manyruns.adam import adam_reference, fused_adam_available
from lossattn.engine.manyruns.arch import arch_of, from_engine, to_engine, unsupported_reason
from lossattn.engine.manyruns.evalsets import EvalSet, eval_chunk, eval_chunks
from lossattn.engine.manyruns.grads import head_pieces, mlp_backward, mlp_forward
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
from lossattn.engine.runtime import flush_denormals
from lossattn.engine.tasks import better, task_for
from lossattn.models.base import MILModel

__all__ = ["VectorizedTrainer"]


class VectorizedTrainer:
    """Train ``R`` independent runs of one architecture as one batched computation.

    Args:
        models: the ``R`` initialised models (built like :func:`lossattn.protocols.runs.execute_run`
            does: ``torch.manual_seed(seed_r)`` then ``create_model``); they must share the architecture.
            At the end each holds its run's selected parameters.
        config: the shared :class:`TrainConfig` (``batch_size`` must be 1).
        seeds: the ``R`` run seeds (batch order, as the Trainer, and the per-run dropout generators).
        max_levels: at most this many row levels per step (1 = always pad to the step's largest bag);
            see :meth:`levels`.
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
        arch = arch_of(models[0])
        shapes = [tuple(p.shape) for p in models[0].parameters()]
        for m in models[1:]:
            a = arch_of(m)
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
        group = order_runs(self.models, self.seeds, train_sets, val_sets, test_sets, self.config.oracle)
        c = self.config
        task = task_for(self.models[0])
        start = time.perf_counter()
        cpu_start = time.process_time()
        if c.threads:
            torch.set_num_threads(c.threads)
        dev, arch = self.device, self.arch

        n_sorted, seeds, models, classes = group.n_sorted, group.seeds, group.models, group.classes

        # stacked parameters, 2-D weights transposed to (in, out); Adam state; gradient buffers
        with torch.no_grad():
            params = {
                name: torch.stack([to_engine(dict(m.named_parameters())[name].detach()) for m in models])
                .to(dev)
                .contiguous()
                for name in arch.names
            }
        grads = {n: torch.zeros_like(p) for n, p in params.items()}
        exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        steps = [torch.zeros((), dtype=torch.float32, device=dev) for _ in classes]
        best = {n: p.clone() for n, p in params.items()}
        # scratch for the gathered MLP parameters/gradients of the runs with long bags (see levels)
        self._mlp_names = [nm for pair in arch.layers for nm in pair]
        self._scratch_p = {nm: torch.empty_like(params[nm]) for nm in self._mlp_names}
        self._scratch_g = {nm: torch.empty_like(params[nm]) for nm in self._mlp_names}
        fused = fused_adam_available()
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

        packed = pack_training(group, dev)
        has_val, oracle_test = group.has_val, group.oracle_test
        ev_tests = group.ev_tests
        ev = eval_chunks(group.vals, ev_tests, dev, self.eval_budget) if (any(has_val) or any(oracle_test)) else None

        p_drop = arch.dropout
        gens = dropout_generators(seeds) if p_drop > 0 else []
        width = sum(arch.widths)
        cuts = np.cumsum([0] + arch.widths)

        histories: list[list[dict[str, Any]]] = [[] for _ in range(R)]
        best_key: list[tuple[float, float] | None] = [None] * R
        best_epoch = [-1] * R
        t_train = t_eval = cpu_train = 0.0
        T = packed.T

        for epoch in range(c.epochs):
            t0, c0 = time.perf_counter(), time.process_time()
            sched = self._schedule(epoch)
            b1, b2 = sched["beta1"], sched["beta2"]
            size, fstart, ylab = epoch_tables(group, packed, epoch)  # the bag order as the Trainer draws it
            # the run's dropout masks of the epoch, drawn for its real instances in epoch order
            drop_rows = epoch_keep_masks(gens, packed, size, width, p_drop, dev) if p_drop > 0 else None
            loss_sum = torch.zeros(R, device=dev)
            for t in range(T):
                k = int(packed.active_at[t])
                self._step(
                    t,
                    k,
                    params,
                    grads,
                    packed.X,
                    packed.pad_row,
                    size,
                    fstart,
                    ylab,
                    drop_rows,
                    loss_sum,
                    cuts,
                    p_drop,
                    dev,
                )
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
            evals = self._evaluate_epoch(params, ev, R) if ev is not None else None
            improved = []
            for r in range(R):
                row: dict[str, Any] = {"epoch": epoch, **sched, "train_loss": train_loss[r]}
                if has_val[r]:
                    row.update(task.val_row(evals[r][0]))
                    cand = task.selection_key(evals[r][0], c.selection)
                else:
                    cand = (0.0, -float(epoch))  # no validation: the last epoch wins
                if oracle_test[r]:
                    row.update(task.oracle_row(evals[r][1]))
                if better(cand, best_key[r]):
                    best_key[r], best_epoch[r] = cand, epoch
                    improved.append(r)
                row["selected_epoch"] = best_epoch[r]
                histories[r].append(row)
            copy_improved(best, params, improved, dev)
            t_eval += time.perf_counter() - t1

        self.stats["updates"] = updates_in_input_order(group, steps)  # optimizer steps per run, in input order
        # every run's model gets its selected parameters; final metrics from the ordinary evaluate()
        t2 = time.perf_counter()
        results = finish_runs(
            group,
            lambda r: {n: from_engine(b[r]) for n, b in best.items()},
            best_epoch,
            histories,
            c,
            dev,
            "vectorized",
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
    def levels(self, sz: np.ndarray) -> list[int]:
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
        thresholds = self.levels(sz)
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
            h, cache = mlp_forward(arch, p, x, drop)
            levels.append((lo, hi, idx, p, g, h, cache, drop, valid))
            lo = hi
        pieces = [(idx, h, torch.from_numpy(valid).to(dev)) for (_, _, idx, _, _, h, _, _, valid) in levels]
        loss, ghs = head_pieces(arch, p_all, g_all, pieces, y, n)
        for i, ((_lo, _hi, _idx, p, g, _, cache, drop, _), gh) in enumerate(zip(levels, ghs, strict=True)):
            # the long runs' gradients of the further levels are summed in gg, then added to theirs
            mlp_backward(arch, p, g, gh, cache, drop, accumulate=i > 1)
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
            adam_reference(ps, gs, ms, vs, sts, **kw)

    # ------------------------------------------------------------------ per-epoch evaluation
    def _evaluate_epoch(
        self, params: dict[str, Tensor], chunks: list[EvalSet], R: int
    ) -> list[tuple[EvalResult | None, EvalResult | None]]:
        """Per run, the evaluation of its validation and (oracle) test bags with its current parameters (None:
        no such bags): per-bag probabilities and the mean per-bag loss, bags in dataset order."""
        out: list[tuple[EvalResult | None, EvalResult | None]] = [(None, None)] * R
        for ev in chunks:
            p = {n: v.index_select(0, ev.runs) for n, v in params.items()}
            prob, loss = eval_chunk(self.arch, p, ev)
            prob_np, loss_np = prob.double().cpu().numpy(), loss.double().cpu().numpy()
            labels = ev.labels.cpu().numpy()
            is_val, is_test = ev.is_val.cpu().numpy(), ev.is_test.cpu().numpy()
            for j, r in enumerate(ev.runs.tolist()):
                out[r] = tuple(  # type: ignore[assignment]
                    EvalResult(float(loss_np[j][sel].mean()), labels[j][sel], prob_np[j][sel]) if sel.any() else None
                    for sel in (is_val[j], is_test[j])
                )
        return out
