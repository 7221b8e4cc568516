"""Old import path of the streamed activation store (one release): use :mod:`circuitkit.runtime.store`."""

from .runtime.store import *
from .runtime.store import __all__  # noqa: F401
