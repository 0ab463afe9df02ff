"""carequal: cohorts, measures, risk adjustment and fair comparison for hospital / post-acute partnerships.

The modules follow the data flow: ``schema`` and ``loaders`` (the data contract) → ``cohorts`` →
``measures`` → ``risk`` → ``compare`` and ``impact`` → ``disclosure`` → ``national`` (the reference every
market is compared with) → ``scale`` (its measures partition by partition, on Dask) → ``inputs`` (prepared once
per run) → ``report``, ``population``, ``explore`` (what the notebooks show) → ``plots`` →
``batch`` (the notebooks, per market) → ``cli``; ``synth`` generates synthetic partnership data with a known
truth, and ``adapters`` turn other layouts (CMS claims) into the contract.
Importing the package reads no files and starts nothing.
"""

from carequal.errors import CarequalError, CarequalWarning, DataQualityWarning, ParameterError, SchemaError

__version__ = "0.1.0"

__all__ = [
    "CarequalError",
    "CarequalWarning",
    "DataQualityWarning",
    "ParameterError",
    "SchemaError",
    "__version__",
]
