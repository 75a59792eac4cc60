"""Shared pieces of the benchmarks: the one-bag-per-step reference loop, peak memory, machine description.

The reference loop has the structure of the authors' released code: a ``DataLoader(batch_size=1)``, one
forward / backward / ``optimizer.step()`` per bag, instance weights from the global-max-shifted ``exp`` of
the instance logits (no logsumexp, no masking), the fused instance loss as a weighted cross-entropy with a
one-hot mask averaged over the bag's instances, plain ``torch.optim.Adam``, and one bag at a time at test
time. The models passed in return ``(bag_logits (1, K), instance_logits (n, K), alpha (n, 1))``.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ListBags",
    "PeakMemory",
    "ReferenceMLPLossAttention",
    "copy_initial_weights",
    "emit",
    "run_main",
    "machine",
    "mean_std",
    "reference_test",
    "reference_train",
    "released_weights",
    "train_reference_mlp",
    "weighted_instance_ce",
]


def weighted_instance_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The released code's weighted cross-entropy, mean over instances: max-shifted log-sum-exp minus the
    target logit picked with a one-hot mask."""
    n, k = logits.shape
    b = logits.max(1, keepdim=True)[0]
    lse = b.squeeze(1) + torch.log(torch.exp(logits - b).sum(1))
    one_hot = torch.arange(0, k, device=logits.device).long().repeat(n, 1).eq(target.repeat(k, 1).t())
    return ((lse - logits.masked_select(one_hot)) * weights).mean()


def released_weights(instance_logits: torch.Tensor) -> torch.Tensor:
    """``α (n, 1)``: the global-max-shifted ``exp`` of the instance logits, summed over classes, normalised."""
    e = (instance_logits - instance_logits.max()).exp().sum(1, keepdim=True)
    return e / e.sum(0)


class ReferenceMLPLossAttention(nn.Module):
    """The released loss-attention forward pass on an MLP extractor (fc256-fc128-fc64, ReLU, dropout)."""

    def __init__(self, in_features: int, num_classes: int = 2, hidden=(256, 128, 64), dropout: float = 0.5) -> None:
        super().__init__()
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor):
        H = self.features(x.squeeze(0))  # (n, 64): the n instances of ONE bag
        out_c = F.linear(H, self.linear.weight, self.linear.bias)  # instance logits (n, K)
        alpha = released_weights(out_c)  # (n, 1)
        context = H * (H.size(0) * alpha.expand_as(H))
        y = self.linear(context.mean(0, keepdim=True))  # bag logits (1, K)
        return y, out_c, alpha.squeeze(1)


def copy_initial_weights(ref: ReferenceMLPLossAttention, ours: nn.Module) -> None:
    """Give the reference our run's initial parameters (same layers, same order)."""
    ref_linears = [m for m in ref.features if isinstance(m, nn.Linear)] + [ref.linear]
    our_linears = [m for m in ours.extractor.modules() if isinstance(m, nn.Linear)] + [ours.classifier]
    if len(ref_linears) != len(our_linears):
        raise RuntimeError("the reference and our model have different layers")
    with torch.no_grad():
        for a, b in zip(ref_linears, our_linears, strict=True):
            a.weight.copy_(b.weight)
            a.bias.copy_(b.bias)


class ListBags(torch.utils.data.Dataset):
    """Pre-built bags; items as the released loader's: ``(bag, [bag_label, instance_labels])``."""

    def __init__(self, dataset) -> None:
        self.items = [
            (dataset[i].x, [torch.tensor(int(dataset.labels[i])), dataset[i].instance_labels])
            for i in range(len(dataset))
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def reference_train(
    model: nn.Module,
    bags: ListBags,
    epochs: int,
    seed: int,
    device: torch.device,
    sync,
    *,
    lr: float,
    weight_decay: float,
    lam: float,
    optimizer: torch.optim.Optimizer | None = None,
    first_epoch: int = 0,
) -> float:
    """The released training loop: a batch_size=1 DataLoader, one bag per step; returns seconds.

    The bag order of each epoch is the Trainer's (``default_rng([seed, epoch])``), given as the sampler.
    Pass ``optimizer`` (and ``first_epoch``) to continue a run; by default a fresh Adam is built.
    """
    if optimizer is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    criterion = nn.CrossEntropyLoss()
    sync()
    start = time.perf_counter()
    for epoch in range(first_epoch, first_epoch + epochs):
        model.train()
        order = np.random.default_rng([seed, epoch]).permutation(len(bags)).tolist()
        # its own generator: the loader then draws nothing from torch's global RNG, so the dropout masks
        # come from the same stream, in the same order, as the Trainer's (both seeded with ``seed``)
        loader = torch.utils.data.DataLoader(bags, batch_size=1, sampler=order, generator=torch.Generator())
        train_loss = 0.0
        for data, label in loader:
            bag_label = label[0].long()
            instance_labels = bag_label * torch.ones(data.size(1)).long()
            data, bag_label, instance_labels = data.to(device), bag_label.to(device), instance_labels.to(device)
            optimizer.zero_grad()
            y, y_c, alpha = model(data)
            loss = criterion(y, bag_label) + lam * weighted_instance_ce(y_c, instance_labels, alpha)
            train_loss += loss.item()
            loss.backward()
            optimizer.step()
    sync()
    return time.perf_counter() - start


def train_reference_mlp(
    ours: nn.Module, train, epochs: int, seed: int, *, lr: float, weight_decay: float, lam: float
) -> tuple[ReferenceMLPLossAttention, float]:
    """One run of the reference loop with the MLP, from our run's initial weights and seed.

    Returns the trained reference model and the training seconds.
    """
    ref = ReferenceMLPLossAttention(train.num_features)
    copy_initial_weights(ref, ours)
    torch.manual_seed(seed)  # the dropout stream of the run, as the Trainer seeds it
    cpu = torch.device("cpu")
    secs = reference_train(
        ref, ListBags(train), epochs, seed, cpu, lambda: None, lr=lr, weight_decay=weight_decay, lam=lam
    )
    return ref, secs


@torch.no_grad()
def reference_test(model: nn.Module, bags: ListBags, device: torch.device, sync) -> tuple[float, float]:
    """The released test loop: one bag at a time (here without autograd); returns (accuracy, seconds)."""
    model.eval()
    sync()
    start = time.perf_counter()
    predicted, truth = [], []
    for data, label in torch.utils.data.DataLoader(bags, batch_size=1, shuffle=False):
        y, _, _ = model(data.to(device))
        predicted.append(int(torch.max(y, 1)[1].item()))
        truth.append(int(label[0]))
    sync()
    accuracy = float(np.mean(np.asarray(predicted) == np.asarray(truth)))
    return accuracy, time.perf_counter() - start


class PeakMemory:
    """Peak memory of a phase: resident set (VmHWM, reset per phase) on CPU, allocator peak on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._libc = None
        with contextlib.suppress(OSError):
            self._libc = ctypes.CDLL("libc.so.6")

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return None
        m = re.search(rf"{key}:\s+(\d+) kB", text)
        return None if m is None else int(m.group(1)) * 1024

    def start(self) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)  # hand freed memory back, so one phase's leftovers don't hide the next's
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        self.baseline = self._status("VmRSS")
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_base = torch.cuda.memory_allocated()

    def stop(self) -> dict[str, float | None]:
        peak = self._status("VmHWM")
        out: dict[str, float | None] = {
            "peak_rss_mib": None if peak is None else peak / 2**20,
            "peak_rss_increase_mib": None if peak is None or self.baseline is None else (peak - self.baseline) / 2**20,
        }
        if self.device.type == "cuda":
            out["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            out["cuda_peak_increase_mib"] = (torch.cuda.max_memory_allocated() - self.cuda_base) / 2**20
        return out


def machine() -> dict:
    """Date (UTC), the command, CPU model, core count, torch threads, load average (and the GPU when there is one)."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    info["cpu_count"] = os.cpu_count()
    info["torch_threads"] = torch.get_num_threads()
    with contextlib.suppress(OSError):
        info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def mean_std(values) -> tuple[float, float]:
    arr = np.asarray(list(values), dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else 0.0)


def emit(result: dict, table: str, json_path: str | None) -> None:
    """Print the result as JSON and as a readable table; also write the JSON to ``json_path``."""
    import json

    print(json.dumps(result, indent=2))
    print()
    print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


def run_main(parse_args, run, table, argv=None) -> int:
    """A benchmark's ``main``: parse ``argv``, run, print (and save) the JSON and the table.

    ``run`` returns None when the data is absent (it has said so); then nothing is printed.
    """
    args = parse_args(argv)
    result = run(args)
    if result is not None:
        emit(result, table(result), args.json)
    return 0
