"""Old import path of the debias workflow (one release): use :mod:`circuitkit.workflows.debias`."""

from .workflows.debias import *
from .workflows.debias import __all__  # noqa: F401
from .workflows.debias.workflow import METHODS, TARGETS, _check_pos_int  # noqa: F401
