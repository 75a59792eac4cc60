"""Whole-slide training: lossattn's engine against plain PyTorch loops, torchmil and the kernel floor, one run.

One generated slide set (:func:`lossattn.slides.make_synthetic_slides`: the CLAM / TRIDENT layout, one ``.h5``
per slide with ``features (N, 1024)`` float32 and ``coords``; sizes log-uniform on 500–20,000 patches; cases
kept within one split) is trained on, one slide per step, by every variant below, for two extractors: the
identity (the features are the instances) and a 1024→512 MLP (Linear, ReLU, dropout 0). Every pair shares the
maths, the initial weights, the slide order of every epoch (``default_rng([seed, epoch])``), Adam and its
learning rate, so the pair's slide AUCs agree up to float rounding and only the implementation differs:

* ``plain_la`` — the fair anchor: a plain PyTorch loop running the same ``LossAttentionMIL`` object
  (``model(x[None])``, no mask; the library's input value checks on, as a user's loop gets them), the slide
  read with ``h5py`` (``f["features"][:]``), ``torch.optim.Adam``. ``plain_la_nochecks`` is the same loop with
  the value checks off (``lossattn.functional.input_checks(False)``).
* ``plain_la_torch`` — the same model and weights written plainly from the paper's equations in a plain loop
  (:class:`PlainLossAttention`: the bag embedding as ``(α[:, None] * h).sum(0)``, the bag logits from it).
* ``lossattn_la`` — :class:`lossattn.engine.Trainer` on :func:`lossattn.datasets.load_feature_folder` (each
  file validated once when first read; ``w<k>``: ``TrainConfig.num_workers = k``).
* ``plain_clam`` / ``lossattn_gated`` — a plain CLAM-style loop (CLAM_SB's gated attention network, 256 wide,
  softmax head, no instance clustering) and the engine running lossattn's ``gated_attention`` with its weights.
* ``torchmil_abmil`` / ``lossattn_abmil`` — torchmil's ``ABMIL`` (attention 128 wide, BCE head) in a plain loop
  (its ``compute_loss``), when ``torchmil`` can be imported, and the engine running lossattn's
  ``attention_sigmoid`` (the same network) with its weights.
* ``floor`` — the kernel floor: for each training slide (read before the clock starts) only the forward product
  and the weight-gradient product of the first weighted layer that reads the instances — the extractor's
  ``x W₁ᵀ + b`` and ``gᵀ x`` for the MLP; the classifier's ``x Wᵀ + b`` and ``gᵀ x`` for the identity
  extractor (no trainer on the same kernels can be faster). ``read`` is the time to read every training slide
  once (``read_direct`` into a new array).

Reported per variant: training instances/s (from opening the data to the end of the last step), time to the
first optimizer step (from opening the data), peak RSS of the phase (VmHWM, reset per phase), test slide AUC.
Runs are interleaved: every round runs every variant once, in a rotated order, from the same initial weights;
the tables give medians over rounds and per-round ratios. The first ``torch.optim`` optimiser of a process
imports ``torch._dynamo`` (seconds); one is built before any timing, so no variant pays it.

``--chunked`` measures one training step on one bag of 100,000 instances in memory and with
``TrainConfig.instance_chunk`` (each in a fresh process): peak RSS, seconds, and the largest gradient difference.
``--scaling`` instead measures how the engine's time to first step and peak RSS grow from 120 to 1,000 slides
(32-d features, same sizes), and the peak RSS increase of ``Standardizer.fit`` over the 1,000 slides against
the largest bag. Generated data is deleted at the end unless ``--data`` names a folder to keep.

    OMP_NUM_THREADS=1 python benchmarks/slides.py --slides 40 --json slides.json
    OMP_NUM_THREADS=1 python benchmarks/slides.py --full          # the 120-slide default preset (2.1 GiB)
    OMP_NUM_THREADS=1 python benchmarks/slides.py --scaling
    OMP_NUM_THREADS=1 python benchmarks/slides.py --chunked
    python benchmarks/slides.py --smoke                            # checks the script (figures meaningless)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from reference import PeakMemory, emit, machine
from torch import nn

import lossattn
from lossattn import functional as LF
from lossattn import metrics as M
from lossattn.datasets import Standardizer, load_feature_folder
from lossattn.engine import TrainConfig, Trainer, evaluate
from lossattn.slides import make_synthetic_slides

HIDDEN = 512  # the MLP extractor's width (1024 -> 512, as CLAM's first layer)


# --------------------------------------------------------------------------- data


def read_slide(path: Path) -> torch.Tensor:
    """A plain loop's read: the whole ``features`` dataset into a new array."""
    with h5py.File(path, "r") as f:
        return torch.from_numpy(f["features"][:])


def split(root: Path, names: tuple[str, ...] = ("train", "test")):
    ds = load_feature_folder(root)
    return {name: ds.subset(ds.split_indices(name)) for name in names}


# --------------------------------------------------------------------------- models


def extractor_kwargs(kind: str) -> dict:
    if kind == "identity":
        return {"extractor": "identity"}
    return {"extractor": "mlp", "extractor_kwargs": {"hidden": [HIDDEN], "dropout": 0.0}}


class PlainCLAM(nn.Module):
    """CLAM_SB's attention branch (Lu et al. 2021): optional fc 1024→512 + ReLU, gated attention 256 wide
    (``attention_a`` tanh, ``attention_b`` sigmoid, ``attention_c``), ``A @ h`` pooling, a linear classifier."""

    def __init__(self, dim: int, mlp: bool, classes: int = 2, hidden: int = 256) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU()) if mlp else nn.Identity()
        width = HIDDEN if mlp else dim
        self.attention_a = nn.Sequential(nn.Linear(width, hidden), nn.Tanh())
        self.attention_b = nn.Sequential(nn.Linear(width, hidden), nn.Sigmoid())
        self.attention_c = nn.Linear(hidden, 1)
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # (N, width)
        A = self.attention_c(self.attention_a(h) * self.attention_b(h))  # (N, 1)
        A = torch.softmax(A.t(), dim=1)  # (1, N)
        return self.classifier(A @ h)  # (1, K)


class PlainLossAttention(nn.Module):
    """Loss-based attention written plainly from the paper's equations (Shi et al. 2020, Eq. 4-7), as a user
    would: ``h = f(x)``, ``z = h Wᵀ + b``, ``α = softmax(logsumexp z)``, ``h̄ = Σ α_t h_t`` as a weighted sum,
    bag logits ``h̄ Wᵀ + b``; loss ``CE(bag) + λ · mean_t(α_t CE_t)`` (lossattn's default λ = 0.1, mean)."""

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        self.extractor = copy.deepcopy(ours.extractor)
        self.classifier = copy.deepcopy(ours.classifier)
        self.lam = float(ours.lam)

    def forward(self, x: torch.Tensor):
        h = self.extractor(x)  # (N, D)
        z = self.classifier(h)  # (N, K)
        alpha = torch.softmax(torch.logsumexp(z, dim=1), dim=0)  # (N,)
        return self.classifier((alpha.unsqueeze(1) * h).sum(0, keepdim=True)), z, alpha  # (1, K)


def plain_la_step(model, x, y):
    bag, z, alpha = model(x)
    instance_ce = nn.functional.cross_entropy(z, y.expand(z.shape[0]), reduction="none")  # (N,)
    return nn.functional.cross_entropy(bag, y) + model.lam * (alpha * instance_ce).mean()


def clam_to_lossattn(plain: PlainCLAM, kind: str, dim: int) -> nn.Module:
    """lossattn's ``gated_attention`` with the CLAM loop's weights (``attention_c``'s bias cancels in the softmax)."""
    ours = lossattn.create_model("gated_attention", in_features=dim, hidden=256, **extractor_kwargs(kind))
    with torch.no_grad():
        if kind == "mlp":
            ours.extractor.net[0].load_state_dict(plain.fc[0].state_dict())
        ours.attention.V.load_state_dict(plain.attention_a[0].state_dict())
        ours.attention.U.load_state_dict(plain.attention_b[0].state_dict())
        ours.attention.w.weight.copy_(plain.attention_c.weight)
        ours.classifier.load_state_dict(plain.classifier.state_dict())
    return ours


def torchmil_abmil(kind: str, dim: int):
    """torchmil's ABMIL and lossattn's ``attention_sigmoid`` with the same weights, or None without torchmil."""
    try:
        from torchmil.models import ABMIL
    except ImportError:
        return None
    feat = nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU()) if kind == "mlp" else nn.Identity()
    theirs = ABMIL(in_shape=(dim,), att_dim=128, gated=False, feat_ext=feat)
    ours = lossattn.create_model("attention_sigmoid", in_features=dim, hidden=128, **extractor_kwargs(kind))
    with torch.no_grad():
        if kind == "mlp":
            ours.extractor.net[0].load_state_dict(feat[0].state_dict())
        ours.attention.V.load_state_dict(theirs.pool.fc1.module.state_dict())
        ours.attention.w.load_state_dict(theirs.pool.fc2.state_dict())
        ours.classifier.load_state_dict(theirs.classifier.module.state_dict())
    return theirs, ours


# --------------------------------------------------------------------------- loops


class Clock:
    """Start time, time of the first optimizer step, end time."""

    def __init__(self, sync) -> None:
        self.sync = sync
        sync()
        self.start = time.perf_counter()
        self.first: float | None = None

    def stepped(self, *_args) -> None:
        if self.first is None:
            self.sync()
            self.first = time.perf_counter()

    def stop(self) -> dict:
        self.sync()
        end = time.perf_counter()
        return {"seconds": end - self.start, "first_step_s": (self.first or end) - self.start}


def plain_loop(model, step, files, labels, epochs: int, seed: int, lr: float, device, sync) -> dict:
    """One slide per step: read, ``step(model, x, y)`` → loss, backward, Adam; the Trainer's slide order."""
    clock = Clock(sync)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        for i in np.random.default_rng([seed, epoch]).permutation(len(files)):
            x = read_slide(files[i]).to(device)
            y = torch.tensor([int(labels[i])], device=device)
            loss = step(model, x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            clock.stepped()
    return clock.stop()


def la_step(model, x, y):
    out = model(x.unsqueeze(0))
    return model.loss(out, y)[0]


def clam_step(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def torchmil_step(model, x, y):
    _, losses = model.compute_loss(y, x.unsqueeze(0))
    return sum(losses.values())


@torch.no_grad()
def plain_auc(model, kind: str, test, device) -> float:
    """Test slide AUC of a plain model, one slide at a time."""
    model.eval()
    probs = []
    for path in test.files:
        x = read_slide(path).to(device)
        if kind == "la":
            p = model(x.unsqueeze(0)).probabilities()[0]
        elif kind == "la_torch":
            p = torch.softmax(model(x)[0], dim=-1)[0]
        elif kind == "clam":
            p = torch.softmax(model(x), dim=-1)[0]
        else:
            z = torch.sigmoid(model(x.unsqueeze(0)))[0]
            p = torch.stack([1 - z, z])
        probs.append(p.float().cpu().numpy())
    model.train()
    return float(M.roc_auc(test.labels, np.stack(probs)))


def engine_run(model, root: Path, epochs: int, seed: int, lr: float, workers: int, device) -> tuple[dict, object]:
    """:class:`Trainer` on the feature folder's training split, timed from opening the folder."""
    clock = Clock(_sync(device))
    train = split(root, ("train",))["train"]
    trainer = Trainer(model, TrainConfig(epochs=epochs, lr=lr, num_workers=workers, device=str(device)), seed=seed)
    trainer.optimizer.register_step_post_hook(clock.stepped)
    trainer.fit(train)
    return clock.stop(), trainer.model


def kernel_floor(model, kind: str, train, device, sync) -> float:
    """Seconds of the forward and weight-gradient products of the first weighted layer, over the training slides."""
    layer = model.extractor.net[0] if kind == "mlp" else model.classifier
    W, b = layer.weight.detach(), layer.bias.detach()
    total = 0.0
    for path in train.files:
        x = read_slide(path).to(device)
        g = torch.ones((x.shape[0], W.shape[0]), device=device)
        sync()
        start = time.perf_counter()
        torch.addmm(b, x, W.t())  # forward product
        g.t().mm(x)  # weight-gradient product
        sync()
        total += time.perf_counter() - start
    return total


def read_floor(train) -> float:
    start = time.perf_counter()
    for path in train.files:
        with h5py.File(path, "r") as f:
            d = f["features"]
            out = np.empty(d.shape, dtype=np.float32)
            d.read_direct(out)
    return time.perf_counter() - start


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


# --------------------------------------------------------------------------- one round


def variants(args, kind: str, dim: int, seed: int) -> dict[str, tuple]:
    """``name -> (runner, ...)``: each variant's initial model (all from ``seed``)."""
    torch.manual_seed(seed)
    la = lossattn.create_model("loss_attention", in_features=dim, **extractor_kwargs(kind))
    torch.manual_seed(seed + 1)
    clam = PlainCLAM(dim, kind == "mlp")
    torch.manual_seed(seed + 2)
    abmil = torchmil_abmil(kind, dim)
    out = {
        "plain_la": ("plain", la, la_step, "la"),
        "plain_la_nochecks": ("plain_nochecks", la, la_step, "la"),
        "plain_la_torch": ("plain", PlainLossAttention(la), plain_la_step, "la_torch"),
    }
    for w in args.workers:
        out[f"lossattn_la_w{w}"] = ("engine", la, w)
    out["plain_clam"] = ("plain", clam, clam_step, "clam")
    out["lossattn_gated"] = ("engine", clam_to_lossattn(clam, kind, dim), args.workers[0])
    if abmil is not None:
        out["torchmil_abmil"] = ("plain", abmil[0], torchmil_step, "abmil")
        out["lossattn_abmil"] = ("engine", abmil[1], args.workers[0])
    out["floor"] = ("floor", la)
    return out


def run_variant(spec, args, root: Path, data, device) -> dict:
    what, model = spec[0], copy.deepcopy(spec[1]).to(device)
    sync = _sync(device)
    memory = PeakMemory(device)
    memory.start()
    if what == "floor":
        seconds = kernel_floor(model, args.kind, data["train"], device, sync)
        row = {"seconds": seconds * args.epochs, "first_step_s": None}
    elif what == "engine":
        row, model = engine_run(model, root, args.epochs, args.seed, args.lr, spec[2], device)
    else:
        with _checks(what):
            row = plain_loop(model, spec[2], data["train"].files, data["train"].labels, args.epochs, args.seed,
                             args.lr, device, sync)  # fmt: skip
    row.update(memory.stop())
    if what == "engine":
        row["auc"] = float(evaluate(model, data["test"], batch_size=64, device=device).auc)
    elif what != "floor":
        with _checks(what):
            row["auc"] = plain_auc(model, spec[3], data["test"], device)
    row["instances_per_s"] = args.epochs * int(data["train"].bag_sizes.sum()) / row["seconds"]
    return row


def _checks(what: str):
    return LF.input_checks(False) if what == "plain_nochecks" else contextlib.nullcontext()


def median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.median(values)) if values else None


def compare(args, root: Path, device) -> dict:
    data = split(root)
    dim = int(data["train"].instance_shape[0])
    n_train = int(data["train"].bag_sizes.sum())
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the one-time torch._dynamo import, before any clock
    result: dict = {"extractors": {}}
    for kind in args.extractors:
        args.kind = kind
        rounds: dict[str, list[dict]] = {}
        for r in range(args.rounds):
            specs = variants(args, kind, dim, args.seed + 10 * r)
            names = list(specs)
            names = names[r % len(names) :] + names[: r % len(names)]  # rotate the order every round
            for name in names:
                row = run_variant(specs[name], args, root, data, device)
                rounds.setdefault(name, []).append(row)
                print(f"{kind} round {r} {name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
        summary = {}
        for name, rows in rounds.items():
            summary[name] = {
                k: median(rows, k) for k in ("instances_per_s", "first_step_s", "peak_rss_mib", "peak_rss_increase_mib")
            }
            summary[name]["auc"] = median(rows, "auc")
            summary[name]["rounds"] = rows
        ours = f"lossattn_la_w{args.workers[0]}"
        ratios = {f"{ours} / plain_la_nochecks": _ratios(rounds, ours, "plain_la_nochecks")}
        for w in args.workers:
            for anchor in ("plain_la", "plain_la_torch", "floor"):
                ratios[f"lossattn_la_w{w} / {anchor}"] = _ratios(rounds, f"lossattn_la_w{w}", anchor)
        ratios["lossattn_gated / plain_clam"] = _ratios(rounds, "lossattn_gated", "plain_clam")
        if "torchmil_abmil" in rounds:
            ratios["lossattn_abmil / torchmil_abmil"] = _ratios(rounds, "lossattn_abmil", "torchmil_abmil")
            ratios[f"{ours} / torchmil_abmil"] = _ratios(rounds, ours, "torchmil_abmil")
        result["extractors"][kind] = {"variants": summary, "ratios": ratios}
    result["read_floor_instances_per_s"] = n_train / read_floor(data["train"])
    result["torchmil"] = _torchmil_version()
    result["data"] = {
        "slides": len(load_feature_folder(root)),
        "train_slides": len(data["train"]),
        "train_instances": n_train,
        "test_slides": len(data["test"]),
        "feature_dim": dim,
    }
    return result


def _ratios(rounds: dict[str, list[dict]], a: str, b: str) -> dict:
    per_round = [x["instances_per_s"] / y["instances_per_s"] for x, y in zip(rounds[a], rounds[b], strict=True)]
    return {"median": float(np.median(per_round)), "rounds": per_round}


def _torchmil_version() -> str:
    try:
        from importlib.metadata import version

        import torchmil.models  # noqa: F401

        return version("torchmil")
    except Exception as exc:  # ImportError, or a broken install
        return f"not available ({type(exc).__name__}: {exc}); pip install torchmil to include it"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --------------------------------------------------------------------------- scaling


def scaling(args, device) -> dict:
    """Time to first step and peak RSS of the engine at 120 and 1,000 slides; Standardizer.fit's memory."""
    out: dict = {}
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    for n in args.scaling_slides:
        root = Path(tempfile.mkdtemp(prefix=f"slides{n}-", dir=args.tmp))
        try:
            t0 = time.perf_counter()
            info = make_synthetic_slides(root, num_slides=n, feature_dim=32, seed=args.seed)
            made = time.perf_counter() - t0
            rows = {}
            for name in ("engine", "plain"):
                torch.manual_seed(args.seed)
                model = lossattn.create_model("loss_attention", in_features=32, extractor="identity")
                memory = PeakMemory(device)
                memory.start()
                if name == "engine":
                    row, _ = engine_run(model, root, 1, args.seed, args.lr, 0, device)
                else:
                    train = split(root, ("train",))["train"]
                    row = plain_loop(model, la_step, train.files, train.labels, 1, args.seed, args.lr, device,
                                     _sync(device))  # fmt: skip
                row.update(memory.stop())
                rows[name] = row
            ds = load_feature_folder(root)
            largest = int(ds.bag_sizes.max()) * 32 * 4
            memory = PeakMemory(device)
            memory.start()
            t0 = time.perf_counter()
            Standardizer().fit(ds)
            fit_s = time.perf_counter() - t0
            fit_mem = memory.stop()
            out[str(n)] = {
                "slides": n,
                "instances": int(sum(info.num_patches)),
                "generate_s": made,
                "engine": rows["engine"],
                "plain_la": rows["plain"],
                "standardizer_fit_s": fit_s,
                "standardizer_peak_rss_increase_mib": fit_mem["peak_rss_increase_mib"],
                "largest_bag_mib": largest / 2**20,
            }
            print(f"scaling {n}: {out[str(n)]}", flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- chunked training


def chunked_check(args, device) -> dict:
    """One training step on one large bag, in memory and with ``instance_chunk``: peak RSS, time, agreement.

    Each variant runs in a fresh child process (so one's freed memory does not hide the other's peak).
    """
    import json
    import subprocess
    import sys

    out = {}
    for chunk in (None, args.chunk):
        code = f"""
import json, resource, time, torch
import lossattn
torch.set_num_threads({args.threads})
torch.manual_seed(0)
model = lossattn.create_model("loss_attention", in_features=1024, extractor="mlp",
                              extractor_kwargs={{"hidden": [{HIDDEN}], "dropout": 0.0}})
x = torch.randn(1, {args.chunk_bag}, 1024, generator=torch.Generator().manual_seed(1))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with lossattn.functional.input_checks(False):
    out = model(x, None, **({{}} if {chunk!r} is None else {{"instance_chunk": {chunk!r}}}))
    loss = model.loss(out, torch.tensor([1]))[0]
    loss.backward()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
grads = torch.cat([p.grad.flatten() for p in model.parameters()])
torch.save(grads, {str(args.tmp_grads)!r} + "{chunk}.pt")
print(json.dumps({{"loss": float(loss), "seconds": seconds, "peak_rss_mib": peak / 1024,
                  "peak_over_start_mib": (peak - base) / 1024}}))
"""
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out["dense" if chunk is None else f"chunk_{chunk}"] = json.loads(done.stdout.strip().splitlines()[-1])
    dense = torch.load(f"{args.tmp_grads}None.pt")
    chunked = torch.load(f"{args.tmp_grads}{args.chunk}.pt")
    out["max_abs_grad_difference"] = float((dense - chunked).abs().max())
    out["max_abs_grad"] = float(dense.abs().max())
    out["bag_instances"] = args.chunk_bag
    return out


# --------------------------------------------------------------------------- output


def table(result: dict) -> str:
    m = result.get("machine", {})
    lines = [
        f"{m.get('date')}: {m.get('command')}\n{m.get('cpu')}, {m.get('cpu_count')} cores, "
        f"{m.get('torch_threads')} torch thread(s), load {m.get('load_average_at_end')}, torch {m.get('torch')}\n"
    ]
    if "extractors" in result:
        d = result["data"]
        lines.append(
            f"{d['slides']} slides ({d['train_slides']} train, {d['train_instances']} instances, {d['feature_dim']}-d), "
            f"{result['settings']['epochs']} epochs, {result['settings']['rounds']} rounds; torchmil: {result['torchmil']}"
        )
        lines.append(
            f"read floor (read_direct of every training slide): {result['read_floor_instances_per_s']:.0f} inst/s"
        )
        for kind, e in result["extractors"].items():
            lines.append(f"\n{kind} extractor\n")
            lines.append("| variant | instances/s | time to first step (s) | peak RSS (MiB) | test slide AUC |")
            lines.append("|---|---|---|---|---|")
            for name, v in e["variants"].items():
                first = "" if v["first_step_s"] is None else f"{v['first_step_s']:.2f}"
                auc = "" if v["auc"] is None else f"{v['auc']:.3f}"
                lines.append(f"| {name} | {v['instances_per_s']:.0f} | {first} | {v['peak_rss_mib']:.0f} | {auc} |")
            lines.append("")
            for name, r in e["ratios"].items():
                per = ", ".join(f"{x:.2f}" for x in r["rounds"])
                lines.append(f"- {name}: {r['median']:.2f}x (rounds {per})")
    if "chunked" in result:
        c = result["chunked"]
        lines.append(f"\none step on one bag of {c['bag_instances']} x 1024 (MLP 1024->512, loss attention)\n")
        lines.append("| variant | loss | seconds | peak RSS (MiB) | peak RSS over the bag's process start (MiB) |")
        lines.append("|---|---|---|---|---|")
        for name, v in c.items():
            if isinstance(v, dict):
                lines.append(
                    f"| {name} | {v['loss']:.7f} | {v['seconds']:.2f} | {v['peak_rss_mib']:.0f} | "
                    f"{v['peak_over_start_mib']:.0f} |"
                )
        lines.append(f"\nlargest gradient difference {c['max_abs_grad_difference']:.3g} (largest gradient "
                     f"{c['max_abs_grad']:.3g})")  # fmt: skip
    if "scaling" in result:
        lines.append("\n| slides | instances | engine first step (s) | engine peak RSS (MiB) | plain first step (s) "
                     "| plain peak RSS (MiB) | Standardizer.fit RSS increase (MiB) | largest bag (MiB) |")  # fmt: skip
        lines.append("|---|---|---|---|---|---|---|---|")
        for row in result["scaling"].values():
            lines.append(
                f"| {row['slides']} | {row['instances']} | {row['engine']['first_step_s']:.2f} | "
                f"{row['engine']['peak_rss_mib']:.0f} | {row['plain_la']['first_step_s']:.2f} | "
                f"{row['plain_la']['peak_rss_mib']:.0f} | {row['standardizer_peak_rss_increase_mib']:.1f} | "
                f"{row['largest_bag_mib']:.1f} |"
            )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slides", type=int, default=40, help="slides to generate (default 40; --full: 120)")
    p.add_argument("--full", action="store_true", help="the default preset's 120 slides (2.1 GiB)")
    p.add_argument("--data", default=None, help="use (or generate and keep) the slide set in this folder")
    p.add_argument("--tmp", default=None, help="where temporary slide sets go (default: the system's)")
    p.add_argument("--extractors", nargs="+", default=["identity", "mlp"], choices=("identity", "mlp"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--workers", type=int, nargs="+", default=[0], help="TrainConfig.num_workers of lossattn_la_w<k>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--scaling", action="store_true", help="the 120 vs 1,000 slides check instead")
    p.add_argument("--scaling-slides", type=int, nargs="+", default=[120, 1000])
    p.add_argument("--chunked", action="store_true", help="one step on one large bag, in memory vs instance_chunk")
    p.add_argument("--chunk", type=int, default=8192, help="instances per chunk of --chunked")
    p.add_argument("--chunk-bag", type=int, default=100_000, help="instances of the --chunked bag")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script, figures meaningless")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.full:
        args.slides = 120
    return args


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = {k: v for k, v in vars(args).items() if k not in ("json",)}
    result: dict = {"settings": settings}
    if args.chunked:
        if args.smoke:
            args.chunk_bag, args.chunk = 3000, 512
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            args.tmp_grads = str(Path(tmp) / "grads")
            result["chunked"] = chunked_check(args, device)
    elif args.scaling:
        if args.smoke:
            args.scaling_slides = [6, 12]
        result["scaling"] = scaling(args, device)
    else:
        keep = args.data is not None
        root = Path(args.data) if keep else Path(tempfile.mkdtemp(prefix="slides-", dir=args.tmp))
        try:
            if not (root / "manifest.csv").exists():
                kw = {"num_slides": args.slides, "seed": args.seed}
                if args.smoke:
                    kw.update(num_slides=10, min_patches=100, max_patches=600, feature_dim=64)
                    kw["splits"] = {"train": 0.5, "test": 0.5}
                info = make_synthetic_slides(root, **kw)
                print(f"generated {info.num_slides} slides, {sum(info.num_patches)} patches in {root}", flush=True)
            result.update(compare(args, root, device))
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
    result["settings"] = settings
    result["machine"] = machine()
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    emit(result, table(result), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
