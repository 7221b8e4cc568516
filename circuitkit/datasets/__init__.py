"""Template datasets (IOI, SVA, induction, bios) for circuitkit's embedded toy LM.

See :mod:`circuitkit.datasets.templates` for the column conventions.
"""

from .templates import (
    BIOS_FORMS,
    BIOS_SPLITS,
    DEFAULT_AMBIGUOUS_GENDER,
    TASKS,
    all_words,
    bios,
    induction,
    ioi,
    load_vocab,
    mixture,
    professions,
    sva,
)

__all__ = [
    "BIOS_FORMS",
    "BIOS_SPLITS",
    "DEFAULT_AMBIGUOUS_GENDER",
    "TASKS",
    "all_words",
    "bios",
    "induction",
    "ioi",
    "load_vocab",
    "mixture",
    "professions",
    "sva",
]
from . import real  # noqa: E402,F401  (tasks for real BPE tokenizers: circuitkit.datasets.real)
