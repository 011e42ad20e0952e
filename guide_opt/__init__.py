"""guide-opt: exact, explainable planning of LLM deployments.

Map of the package:

- ``errors``        -- the one exception users see for bad input (:class:`InputError`).
- ``data_files``    -- where the bundled data folders (``hardware_db/``, ``solvers/``, ``problems/``) live.
- ``hardware``      -- :class:`GpuSpec`, one accelerator's figures, each with its source.
- ``llm``           -- :class:`LlmSpec`, the architecture of the LLM being served.
- ``frameworks``    -- :class:`FrameworkProfile`, what a serving engine changes.
- ``quantization``  -- :class:`QuantizationSpec`, weight / activation / KV precisions.
- ``prices``        -- :class:`PriceTable`, $/GPU-hour quotes with date and source.
- ``catalog``       -- loads all of the above from ``hardware_db/`` and resolves ids.
- ``perf``          -- the pure performance model (roofline, memory, communication, estimator).
- ``cli``           -- the ``guide-opt`` command.
"""

__version__ = "0.1.0"
