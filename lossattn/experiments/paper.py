"""Published numbers of Shi et al. (AAAI 2020), Tables 1–5, to print beside ours."""

from __future__ import annotations

__all__ = ["TABLE1", "TABLE2_BINARY", "TABLE2_MULTICLASS", "TABLE3", "TABLE4", "TABLE5", "TABLE1_METHODS"]

# Table 1: method -> dataset -> (mean accuracy, std)
TABLE1: dict[str, dict[str, tuple[float, float]]] = {
    "minet_instance": {"musk1": (0.889, 0.088), "musk2": (0.858, 0.110), "fox": (0.613, 0.078), "tiger": (0.824, 0.076), "elephant": (0.858, 0.083)},
    "minet_embedding": {"musk1": (0.887, 0.091), "musk2": (0.859, 0.102), "fox": (0.622, 0.084), "tiger": (0.830, 0.072), "elephant": (0.862, 0.077)},
    "minet_ds": {"musk1": (0.894, 0.093), "musk2": (0.874, 0.097), "fox": (0.630, 0.080), "tiger": (0.845, 0.087), "elephant": (0.872, 0.072)},
    "minet_rc": {"musk1": (0.898, 0.097), "musk2": (0.873, 0.098), "fox": (0.619, 0.104), "tiger": (0.836, 0.083), "elephant": (0.857, 0.089)},
    "attention": {"musk1": (0.892, 0.090), "musk2": (0.858, 0.106), "fox": (0.615, 0.096), "tiger": (0.839, 0.054), "elephant": (0.868, 0.054)},
    "gated_attention": {"musk1": (0.900, 0.088), "musk2": (0.863, 0.094), "fox": (0.603, 0.068), "tiger": (0.845, 0.046), "elephant": (0.857, 0.064)},
    "loss_attention": {"musk1": (0.917, 0.066), "musk2": (0.911, 0.063), "fox": (0.712, 0.074), "tiger": (0.897, 0.065), "elephant": (0.900, 0.069)},
}  # fmt: skip
TABLE1_METHODS = list(TABLE1)

# Table 2: method -> training bags (50, 100, 150, 200) -> value
_BAGS = (50, 100, 150, 200)


def _row(*values: float) -> dict[int, float]:
    return dict(zip(_BAGS, values, strict=True))


TABLE2_BINARY: dict[str, dict[int, float]] = {
    "attention_sigmoid": _row(0.858, 0.901, 0.942, 0.961),
    "gated_attention_sigmoid": _row(0.869, 0.912, 0.966, 0.968),
    "instance_max": _row(0.904, 0.947, 0.952, 0.954),
    "instance_mean": _row(0.800, 0.851, 0.913, 0.939),
    "embedding_max": _row(0.805, 0.943, 0.962, 0.975),
    "embedding_mean": _row(0.794, 0.847, 0.904, 0.934),
    "attention": _row(0.914, 0.963, 0.977, 0.984),
    "gated_attention": _row(0.908, 0.959, 0.973, 0.979),
    "loss_attention": _row(0.931, 0.969, 0.978, 0.984),
}
TABLE2_MULTICLASS: dict[str, dict[int, float]] = {
    "instance_max": _row(0.477, 0.750, 0.846, 0.887),
    "instance_mean": _row(0.587, 0.774, 0.865, 0.917),
    "embedding_max": _row(0.635, 0.796, 0.879, 0.918),
    "embedding_mean": _row(0.582, 0.774, 0.869, 0.920),
    "attention": _row(0.753, 0.885, 0.923, 0.938),
    "gated_attention": _row(0.720, 0.869, 0.911, 0.930),
    "loss_attention": _row(0.765, 0.892, 0.917, 0.939),
}

# Table 3: CIFAR10-bags accuracy, (bag mean, training bags) -> value
TABLE3: dict[str, dict[tuple[int, int], float]] = {
    "attention": {(10, 500): 0.384, (10, 5000): 0.507, (50, 500): 0.610, (50, 5000): 0.823},
    "gated_attention": {(10, 500): 0.370, (10, 5000): 0.476, (50, 500): 0.596, (50, 5000): 0.769},
    "loss_attention": {(10, 500): 0.395, (10, 5000): 0.519, (50, 500): 0.615, (50, 5000): 0.839},
}
# Table 4: CIFAR-10 accuracy with 1,000 / 5,000 / all training images
TABLE4: dict[str, tuple[float, float, float]] = {
    "max": (0.571, 0.815, 0.944),
    "mean": (0.584, 0.819, 0.946),
    "attention": (0.557, 0.791, 0.933),
    "gated_attention": (0.557, 0.794, 0.933),
    "loss_attention": (0.605, 0.830, 0.948),
}
# Table 5: Tiny ImageNet top-1 / top-5 / localization AP
TABLE5: dict[str, tuple[float, float, float]] = {
    "max": (0.575, 0.780, 0.748),
    "mean": (0.592, 0.791, 0.704),
    "attention": (0.554, 0.776, 0.499),
    "gated_attention": (0.557, 0.777, 0.499),
    "loss_attention": (0.598, 0.785, 0.756),
}
