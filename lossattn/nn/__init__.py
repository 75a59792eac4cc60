"""Deprecated alias of :mod:`lossattn.models` (lossattn 0.1's name for the modules); kept for this release.

``from lossattn.nn import LossAttentionMIL`` keeps working; new code imports from ``lossattn.models``.
"""

from lossattn.models import *  # noqa: F403  (the alias re-exports the whole public API)
from lossattn.models import __all__  # noqa: F401
