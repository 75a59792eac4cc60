"""The many-runs backend: many small one-bag-per-step runs of one method trained as one batched computation.

:func:`fit_many` is the entry point: it trains each run exactly as :func:`lossattn.engine.fit` would (same
splits, initial weights, bag order, optimiser and selection rule) through one of two batched backends where
they apply, one run at a time elsewhere: the hand-written backward (:class:`VectorizedTrainer`; Loss-Attention
and softmax attention on the MLP, the fastest) and ``torch.func`` (:class:`FuncVectorizedTrainer`; every other
single-label bag model whose forward vmaps).
"""

from lossattn.engine.manyruns.arch import SUPPORTED_MODELS, unsupported_reason
from lossattn.engine.manyruns.fit import BACKENDS, backend_for, fit_many
from lossattn.engine.manyruns.func import FuncVectorizedTrainer
from lossattn.engine.manyruns.funcplan import FUNC_SUPPORTED_MODELS
from lossattn.engine.manyruns.funcplan import unsupported_reason as func_unsupported_reason
from lossattn.engine.manyruns.trainer import VectorizedTrainer

__all__ = [
    "BACKENDS",
    "FUNC_SUPPORTED_MODELS",
    "FuncVectorizedTrainer",
    "SUPPORTED_MODELS",
    "VectorizedTrainer",
    "backend_for",
    "fit_many",
    "func_unsupported_reason",
    "unsupported_reason",
]
