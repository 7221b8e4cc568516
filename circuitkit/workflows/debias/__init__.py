"""SHIFT-style debiasing as a workflow over the public pieces (capture/pooling in :mod:`circuitkit.runtime`,
:class:`~circuitkit.CircuitLasso` for the ranking, :mod:`circuitkit.datasets.bios` for the data).

See :mod:`circuitkit.workflows.debias.workflow` for the steps and the metrics.
"""

from .workflow import (  # noqa: F401
    METHODS,
    BiosData,
    DebiasConfig,
    DebiasResult,
    FeatureRanking,
    ProfessionProbe,
    ablate,
    evaluate,
    feature_gender_stats,
    iterative_selection,
    load_bias_in_bios,
    load_bios_splits,
    load_debias_saes,
    marked_features,
    rank_features,
    run_debias,
    select_features,
    shift_ranking,
)

__all__ = ["BiosData", "DebiasConfig", "DebiasResult", "FeatureRanking", "ProfessionProbe", "ablate", "evaluate", "feature_gender_stats", "iterative_selection", "load_bias_in_bios", "load_bios_splits", "load_debias_saes", "marked_features", "rank_features", "run_debias", "select_features", "shift_ranking"]
