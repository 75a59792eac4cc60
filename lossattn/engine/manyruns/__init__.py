"""The many-runs backend: many small one-bag-per-step runs of one method trained as one batched computation.

:func:`fit_many` is the entry point: it trains each run exactly as :func:`lossattn.engine.fit` would (same
splits, initial weights, bag order, optimiser and selection rule) and uses the batched backend
(:class:`VectorizedTrainer`) where it applies, one run at a time elsewhere.
"""

from lossattn.engine.manyruns.arch import SUPPORTED_MODELS, unsupported_reason
from lossattn.engine.manyruns.fit import fit_many
from lossattn.engine.manyruns.trainer import VectorizedTrainer

__all__ = ["SUPPORTED_MODELS", "VectorizedTrainer", "fit_many", "unsupported_reason"]
