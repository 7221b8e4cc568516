"""Old import path (one release): InterpBench loaders live in :mod:`circuitkit.models.interpbench`."""

from ..models.interpbench import *  # noqa: F401,F403
from ..models.interpbench import __all__  # noqa: F401
from ..models.interpbench import _cfg_dict, hook_to_component, model_from_state_dict  # noqa: F401
