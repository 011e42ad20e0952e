"""The web planner: ``guide-opt serve`` (GUIDE's Figure 12 form, and beyond).

- :mod:`guide_opt.web.form` -- the form and the problem file it stands for;
- :mod:`guide_opt.web.worker` -- one solve or estimate request as a plain function;
- :mod:`guide_opt.web.jobs` -- solves in separate processes: queued, bounded in time, cancellable;
- :mod:`guide_opt.web.app` -- the FastAPI application: the page, ``/api/solve``, ``/api/estimate``,
  ``/api/jobs`` and the OpenAPI documentation at ``/docs``.

The page and the API call the same library function as ``guide-opt solve``
(:func:`guide_opt.api.solve`), so a web session's downloaded problem file reproduces
its answer on the command line.
"""
