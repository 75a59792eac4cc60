"""What the torch.func many-runs backend can train, and the per-run functions it transforms.

:class:`FuncPlan` holds one template copy of the runs' model (eval mode) and the two per-run functions the
backend maps over the run dimension with ``torch.func.vmap``: the training loss of one bag (and whether the
bag was predicted right) and the class probabilities + loss of one bag. Dropout is not the model's own:
every ``nn.Dropout`` gets a forward hook that multiplies its input by a keep-mask handed in per run, so
each run draws its masks from its own generator (the hand-written backend's masks,
:func:`lossattn.engine.manyruns.group.keep_mask`).

:func:`unsupported_reason` says why a model/config cannot be trained this way; it ends with one vmapped
gradient step on a tiny padded bag, so any model whose forward and loss do not vmap is refused with the
transform's own error.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

from lossattn.engine.config import TrainConfig
from lossattn.models.base import MILModel

__all__ = [
    "FUNC_SUPPORTED_MODELS",
    "FuncPlan",
    "config_reason",
    "hyperparameters",
    "probe_reason",
    "structure_reason",
    "unsupported_reason",
]

#: registered bag models the torch.func backend trains (single-label, instance input; with any extractor whose
#: forward vmaps: MLP, identity, LeNet5); a test checks this is every such entry of the registry
FUNC_SUPPORTED_MODELS = (
    "attention",
    "attention_sigmoid",
    "embedding_max",
    "embedding_mean",
    "gated_attention",
    "gated_attention_sigmoid",
    "instance_max",
    "instance_mean",
    "loss_attention",
    "minet_ds",
    "minet_embedding",
    "minet_instance",
    "minet_rc",
)


def config_reason(config: TrainConfig) -> str | None:
    """Why the torch.func backend cannot train with ``config`` (one bag per step, no ensemble, no AMP), or None."""
    if config.batch_size != 1:
        return f"batch_size={config.batch_size} (the torch.func engine trains one bag per step)"
    if config.consistency_weight > 0:
        return "the temporal-ensemble consistency cost (consistency_weight > 0) is not vectorized"
    if config.amp:
        return "AMP is not vectorized"
    return None


def structure_reason(model: nn.Module) -> str | None:
    """Why the module tree of ``model`` cannot be trained by the torch.func backend, or None.

    A single-label bag :class:`MILModel` (not an image model, not multi-label), no batch norm (batch statistics
    are shared across the bag's instances and would need per-run buffers), dropout only as ``nn.Dropout``.
    """
    if not isinstance(model, MILModel):
        return f"model {type(model).__name__} is not a MILModel"
    if getattr(model, "input_kind", "instances") != "instances":
        return f"model {type(model).__name__} takes images, not bags (one image per step is not vectorized)"
    if getattr(model, "task", "single_label") != "single_label":
        return f"model {type(model).__name__} is multi-label (the torch.func engine trains single-label models)"
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            return f"module {name} ({type(mod).__name__}) keeps batch statistics (not vectorized)"
        if isinstance(mod, nn.modules.dropout._DropoutNd) and type(mod) is not nn.Dropout and mod.p > 0:
            return f"module {name} is {type(mod).__name__} (only nn.Dropout is vectorized)"
    return None


def hyperparameters(model: nn.Module) -> list[tuple[str, str, Any]]:
    """The plain (number/string/bool/tuple) attributes of every submodule: λ, reductions, heads, dropout p.

    Runs of one group must agree on them: the group runs one template model with every run's parameters.
    """
    out = []
    for name, mod in model.named_modules():
        for key, value in sorted(vars(mod).items()):
            if key != "training" and not key.startswith("_") and isinstance(value, (bool, int, float, str, tuple)):
                out.append((name, key, value))
    return out


def instance_shape(model: nn.Module) -> tuple[int, ...]:
    """Shape of one instance, from the extractor (``instance_shape`` or ``in_features``)."""
    ext = getattr(model, "extractor", None)
    shape = getattr(ext, "instance_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    width = getattr(ext, "in_features", None)
    if width is None:
        raise ValueError(f"cannot tell the instance shape of extractor {type(ext).__name__}")
    return (int(width),)


class FuncPlan:
    """The template model (eval mode, dropout hooks) and the per-run functions the backend vmaps.

    Args:
        model: one run's model; the plan keeps a deep copy (the runs' parameters are passed in per call).

    Attributes:
        names: parameter names in ``model.named_parameters()`` order.
        instance_shape: the shape ``S`` of one instance.
        p_drop: the dropout probability of every ``nn.Dropout`` module (0: none).
        cuts: ``(n_dropout + 1,)`` column offsets of each dropout module's block in a run's keep-mask row
            (``width = cuts[-1]`` keep bits per instance, the modules in call order).

    Raises:
        ValueError: the dropout modules differ in ``p``, run more than once per forward, or act on a tensor
            that is not one row per instance (the keep-mask has one row per instance position).
    """

    def __init__(self, model: MILModel) -> None:
        self.base = copy.deepcopy(model).eval()  # eval: nn.Dropout is the identity, the hooks apply the masks
        self.names = [n for n, _ in self.base.named_parameters()]
        self.instance_shape = instance_shape(self.base)
        self.keep: Tensor | None = None  # (N, W) scaled keep-masks of the run being traced
        drops = [m for m in self.base.modules() if type(m) is nn.Dropout and m.p > 0]
        self.p_drop = float(drops[0].p) if drops else 0.0
        if any(float(m.p) != self.p_drop for m in drops):
            raise ValueError("the model's dropout probabilities differ between modules (one keep-mask rate per run)")
        self.cuts = np.zeros(1, dtype=np.int64)
        if drops:
            self._probe_dropout(drops)

    def _probe_dropout(self, drops: list[nn.Module]) -> None:
        """Widths of the dropout modules' per-instance inputs, in call order; hooks that apply ``self.keep``.

        A forward on bags of 2 and 3 instances: a module whose input grows by ``w`` numbers per instance (and
        holds ``2w`` for 2 instances) acts on one row of width ``w`` per instance.
        """
        seen: dict[int, list[int]] = {}
        order: list[nn.Module] = []

        def record(mod, args, out):
            if id(mod) not in seen:
                order.append(mod)
            seen.setdefault(id(mod), []).append(int(args[0].numel()))

        handles = [m.register_forward_hook(record) for m in drops]
        try:
            with torch.no_grad():
                for n in (2, 3):
                    x = torch.zeros((1, n, *self.instance_shape))
                    self.base(x, torch.ones((1, n), dtype=torch.bool))
        finally:
            for h in handles:
                h.remove()
        if len(order) != len(drops):
            raise ValueError("a dropout module of the model is not used in its forward")
        widths = []
        for m in order:
            sizes = seen[id(m)]
            if len(sizes) != 2:
                raise ValueError("a dropout module runs more than once per forward (not vectorized)")
            w = sizes[1] - sizes[0]
            if w <= 0 or sizes[0] != 2 * w:
                raise ValueError("a dropout module acts on a tensor that is not one row per instance (not vectorized)")
            widths.append(w)
        self.cuts = np.cumsum([0, *widths])
        for i, m in enumerate(order):
            m.register_forward_hook(self._hook(int(self.cuts[i]), int(self.cuts[i + 1])))

    def _hook(self, a: int, b: int):
        def apply(mod, args, out):
            if self.keep is None:
                return out
            inp = args[0]
            return inp * self.keep[:, a:b].reshape(inp.shape)  # keep (N, W): one row per instance position

        return apply

    @property
    def width(self) -> int:
        """Keep bits per instance (0 without dropout)."""
        return int(self.cuts[-1])

    def loss(
        self, p: dict[str, Tensor], x: Tensor, mask: Tensor, y: Tensor, keep: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One run's training loss on one bag and, as aux, its loss terms and whether it was predicted right.

        Args:
            p: the run's parameters by name.
            x: ``(1, N, *S)`` the bag, zero-padded; mask ``(1, N)``; y ``(1,)`` its class.
            keep: ``(N, W)`` scaled keep-masks (``mask / (1 - p)``) of its instances, or None (no dropout).

        Returns:
            ``(loss, aux)``: the scalar loss (``model.loss``'s total) and the scalars ``aux``: the model's other
            loss terms by name (``"bag"``, ``"instance"``...) and ``"correct"``, 1.0 when the bag's predicted
            class is ``y``.
        """
        self.keep = keep
        try:
            out = functional_call(self.base, p, (x, mask))
            loss, terms = self.base.loss(out, y, mask)
        finally:
            self.keep = None
        aux = {k: v.detach() for k, v in terms.items() if k != "total"}
        aux["correct"] = (out.predictions() == y).to(loss.dtype).sum().detach()
        return loss, aux

    def predict(self, p: dict[str, Tensor], x: Tensor, mask: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Class probabilities ``(K,)`` and loss of one bag ``x (1, N, *S)`` (no dropout)."""
        out = functional_call(self.base, p, (x, mask))
        loss, _ = self.base.loss(out, y, mask)
        return out.probabilities()[0], loss


def probe_reason(plan: FuncPlan) -> str | None:
    """Run one vmapped gradient step on a tiny padded bag of 2 fake runs; None if it works, else why not."""
    params = {n: torch.stack([v.detach(), v.detach()]) for n, v in plan.base.named_parameters()}
    dev = next(iter(params.values())).device if params else torch.device("cpu")
    x = torch.zeros((2, 1, 3, *plan.instance_shape), device=dev)
    mask = torch.tensor([[[True, True, False]], [[True, False, False]]], device=dev)
    y = torch.zeros((2, 1), dtype=torch.long, device=dev)
    keep = torch.ones((2, 3, plan.width), device=dev) if plan.width else None
    step = vmap(grad_and_value(plan.loss, has_aux=True), in_dims=(0, 0, 0, 0, 0 if keep is not None else None))
    try:
        grads, (loss, _) = step(params, x, mask, y, keep)
    except Exception as exc:  # noqa: BLE001 - any failure of the transform is the reason
        return f"its forward/loss does not vmap ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    if loss.shape != (2,) or any(grads[n].shape != params[n].shape for n in params):
        return "its loss is not one scalar per bag under vmap"
    return None


def unsupported_reason(model: nn.Module, config: TrainConfig, probe: bool = True) -> str | None:
    """None when :class:`~lossattn.engine.manyruns.func.FuncVectorizedTrainer` can train ``model`` with ``config``.

    Checks the config (:func:`config_reason`), the module tree (:func:`structure_reason`), the dropout modules
    (:class:`FuncPlan`) and, with ``probe``, runs one vmapped gradient step on a tiny padded bag
    (:func:`probe_reason`; tens of milliseconds).
    """
    reason = config_reason(config) or structure_reason(model)
    if reason is not None or not probe:
        return reason
    try:
        plan = FuncPlan(model)
    except ValueError as exc:
        return str(exc)
    return probe_reason(plan)
