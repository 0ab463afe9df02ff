"""carequal: cohorts, measures, risk adjustment and fair comparison for hospital / post-acute partnerships.

The modules follow the data flow, and imports flow one way (``tests/test_architecture.py`` holds the order):
``errors``, ``lazy``, ``periods``, ``intervals`` and ``convergence`` (used everywhere) → ``schema`` and ``loaders`` (the
data contract; ``synth`` and ``adapters`` produce it) → ``cohorts`` → ``measures`` → ``risk`` → ``compare``,
``impact``, ``cost``, ``agreement`` → ``disclosure`` → ``national`` (the reference every market is compared with),
``scale`` (its measures partition by partition, on Dask) and ``inputs`` (prepared once per run) →
``presentation`` (numbers as text, tables as HTML) → the report content (``report``, ``screening``, ``packet``,
``population``, ``explore``: what the notebooks show) → ``plots`` → ``batch`` (the notebooks, per market) →
``cli``.

The names below are where a data scientist starts::

    import carequal as cq
    tables = cq.load_tables("data/sample").tables
    cohort = cq.index_stays(tables["stays"], tables["facilities"], tables["patients"], tables["enrollment"])
    flags = cq.readmissions(cohort.index, tables["stays"], tables["facilities"])

Every error and warning carequal raises is here too (all defined in :mod:`carequal.errors`). Everything else is
in its module, listed in that module's ``__all__``.

Importing the package reads no files, starts nothing and loads only :mod:`carequal.errors`: the functions and
classes are loaded from their modules on first use (:mod:`carequal.lazy`, PEP 562), so ``import carequal``
costs milliseconds, not the seconds of pandas, statsmodels or matplotlib. ``dir(carequal)`` and tab completion
list them all the same.
"""

from carequal.errors import (
    AgreementError,
    CarequalError,
    CarequalWarning,
    DataQualityWarning,
    DisclosureError,
    DisclosureWarning,
    FolderBusyError,
    FunnelWarning,
    ModelError,
    ModelWarning,
    NoBetweenUnitVarianceWarning,
    NotConvergedWarning,
    ParameterError,
    SchemaError,
    SourceError,
)
from carequal.lazy import lazy_attributes

__version__ = "0.1.0"

_HOMES: dict[str, str] = {
    # loading the contract tables
    "load_tables": "carequal.loaders",
    # the cohort
    "IndexRules": "carequal.cohorts",
    "index_stays": "carequal.cohorts",
    "post_acute_episodes": "carequal.cohorts",
    # measures
    "index_measures": "carequal.measures",
    "mortality": "carequal.measures",
    "rate_table": "carequal.measures",
    "readmissions": "carequal.measures",
    # risk adjustment
    "HierarchicalLogit": "carequal.risk",
    "LogisticRiskModel": "carequal.risk",
    "risk_covariates": "carequal.risk",
    # fair comparison and partnership impact
    "funnel_data": "carequal.compare",
    "indirect_standardisation": "carequal.compare",
    "p_chart": "carequal.compare",
    "scorecard": "carequal.compare",
    "difference_in_differences": "carequal.impact",
    # sharing
    "suppress_counts": "carequal.disclosure",
    # charts
    "funnel_plot": "carequal.plots",
    "set_theme": "carequal.plots",
}
"""The public functions and classes → the module that defines them (loaded on first use)."""

__all__ = [
    "AgreementError",
    "CarequalError",
    "CarequalWarning",
    "DataQualityWarning",
    "DisclosureError",
    "DisclosureWarning",
    "FolderBusyError",
    "FunnelWarning",
    "ModelError",
    "ModelWarning",
    "NoBetweenUnitVarianceWarning",
    "NotConvergedWarning",
    "ParameterError",
    "SchemaError",
    "SourceError",
    "__version__",
    *_HOMES,
]

__getattr__, __dir__ = lazy_attributes(globals(), _HOMES)
del lazy_attributes  # a tool of this file, not a name of the package
