"""OR-Tools' CP-SAT Python API (``cp_model``), imported without loading pandas.

``ortools.sat.python.cp_model`` imports pandas at module level, for its optional pandas-indexed
helpers (``new_int_var_series``, ``new_bool_var_series`` and the like) and the ``pd.Index`` /
``pd.Series`` in their annotations. Importing pandas is the largest part of a single-model
solve's start-up (about 0.4-0.9 s of CPU on a 2-core machine, more than OR-Tools itself), and
guide-opt never hands pandas objects to CP-SAT.

So while pandas is not loaded yet, ``cp_model`` is imported against a stand-in ``pandas``
module whose ``Index`` and ``Series`` are classes nothing is an instance of: the module's
``isinstance`` checks take their non-pandas branch, which is the only one guide-opt reaches.
The stand-in is taken out of ``sys.modules`` right after, so any later ``import pandas`` (a
user's, or a library's) loads the real pandas; only ``cp_model``'s pandas helpers keep the
stand-in, and guide-opt does not call them. Should an OR-Tools release need more of pandas
while it imports, the stand-in import fails and ``cp_model`` is imported again with the real
pandas: slower, never wrong.
"""

from __future__ import annotations

import importlib
import sys
import types

#: The OR-Tools module this one loads.
CP_MODEL_MODULE = "ortools.sat.python.cp_model"


def _pandas_stand_in() -> types.ModuleType:
    """A ``pandas`` module with only ``Index`` and ``Series``, classes of no object."""
    stand_in = types.ModuleType("pandas", "guide-opt's stand-in for pandas while OR-Tools' cp_model is imported (guide_opt.cp_sat)")

    class Index:
        """Never instantiated: no object guide-opt hands to CP-SAT is a pandas Index."""

    class Series:
        """Never instantiated: no object guide-opt hands to CP-SAT is a pandas Series."""

    stand_in.Index, stand_in.Series = Index, Series
    return stand_in


def import_with_stand_in(module: str, stand_in: types.ModuleType) -> types.ModuleType:
    """Import ``module`` with ``stand_in`` in place of the module of the same name, if that one is not loaded yet.

    The stand-in is removed from ``sys.modules`` afterwards, whatever happens. If importing
    ``module`` against it raises (it needs more than the stand-in has), ``module`` is imported
    again with the real one.
    """
    name = stand_in.__name__
    if module in sys.modules or name in sys.modules:
        return importlib.import_module(module)
    sys.modules[name] = stand_in
    try:
        return importlib.import_module(module)
    except Exception:
        sys.modules.pop(module, None)
    finally:
        if sys.modules.get(name) is stand_in:
            del sys.modules[name]
    return importlib.import_module(module)


cp_model = import_with_stand_in(CP_MODEL_MODULE, _pandas_stand_in())
