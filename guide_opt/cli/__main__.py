"""``python -m guide_opt.cli``: the ``guide-opt`` command without the console script."""

from guide_opt.cli import console_main

console_main()
