"""LLM-Pilot static-column accuracy per GPU, metric and TP degree (RESULTS.md section 12.4).

Run from the repository root::

    python benchmarks/bench_pilot_tp.py            # Markdown table on stdout
    python benchmarks/bench_pilot_tp.py --json     # the same rows as JSON

The columns of ``guide-opt validate --source llm-pilot`` (default efficiency factors, closed-loop
rows as a static batch), split by the tensor-parallel degree of the measured deployment, plus the
all-degree row per GPU and metric: where a change to the all-reduce model shows (TP 1 has none).
"""

from __future__ import annotations

import argparse
import json
import sys

from guide_opt.catalog import load_catalog
from guide_opt.validation.accuracy import error_stats, evaluate
from guide_opt.validation.datasets import default_data_dir, load_source


def rows_by_tp() -> list[dict]:
    """One dict per (GPU, metric, TP degree or ``all``): MAPE, bias (percent) and count."""
    catalog = load_catalog()
    data = load_source("llm-pilot", catalog, default_data_dir())
    result = evaluate(data.rows, catalog, None, serving="static")
    groups: dict[tuple[str, str, str], list] = {}
    for c in result.comparisons:
        for tp in ("all", str(c.measurement.tp)):
            groups.setdefault((c.measurement.gpu, c.metric, tp), []).append(c)
    out = []
    for (gpu, metric, tp), group in sorted(groups.items()):
        mape, _median, bias = error_stats(group)
        out.append({"gpu": gpu, "metric": metric, "tp": tp, "mape": round(mape, 1), "bias": round(bias, 1), "count": len(group)})
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the split as Markdown (or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    rows = rows_by_tp()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| gpu | metric | TP | MAPE % | bias % | n |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['gpu']} | {r['metric']} | {r['tp']} | {r['mape']:.1f} | {r['bias']:+.1f} | {r['count']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
