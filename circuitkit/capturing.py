"""Old import path of capture and loading (one release): use :mod:`circuitkit.runtime` instead."""

from .runtime.capturing import AGGREGATES, capture, forward  # noqa: F401
from .runtime.inputs import PositionSpec  # noqa: F401
from .runtime.inputs import batches as _batches  # noqa: F401
from .runtime.inputs import positions_for as _positions_for  # noqa: F401
from .runtime.inputs import tokenize as _tokenize  # noqa: F401
from .runtime.loading import LoadedModel, load_model

__all__ = ["LoadedModel", "capture", "forward", "load_model"]
