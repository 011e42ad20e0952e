"""Compare two outputs of ``bench_accuracy.py`` (before / after a model change), per source, GPU and metric.

Run from the repository root::

    python benchmarks/bench_accuracy.py > after.md          # on the changed tree
    (cd OLD_CHECKOUT && python benchmarks/bench_accuracy.py) > before.md
    python benchmarks/compare_accuracy.py before.md after.md

Reads the per-(source, GPU, metric) tables of sections 1.2 (default factors) and 1.3 (calibrated,
leave-one-LLM-out) of both files and prints one Markdown table with MAPE and bias before and after.
"""

from __future__ import annotations

import sys
from pathlib import Path

#: Header of the section 1.2 detail table and of the section 1.3 held-out table.
DEFAULT_HEADER = "| source | gpu | metric | MAPE % | median APE % | bias % | n |"
HELD_OUT_HEADER = "| source | gpu | metric | MAPE default | MAPE calibrated | bias default | bias calibrated | n |"


def _table(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    if header not in lines:  # e.g. a run cut short before its calibrated section
        return []
    start = lines.index(header) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def parse(text: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """(source, gpu, metric) -> default MAPE / bias / n and calibrated (held-out) MAPE / bias."""
    out: dict[tuple[str, str, str], dict[str, str]] = {}
    for src, gpu, metric, mape, _median, bias, n in _table(text, DEFAULT_HEADER):
        out[(src, gpu, metric)] = {"mape": mape, "bias": bias, "n": n}
    for src, gpu, metric, _md, mape_cal, _bd, bias_cal, _n in _table(text, HELD_OUT_HEADER):
        out.setdefault((src, gpu, metric), {}).update({"mape_cal": mape_cal, "bias_cal": bias_cal})
    return out


def compare(before: str, after: str) -> str:
    """The Markdown comparison table."""
    b, a = parse(before), parse(after)
    lines = ["| source | gpu | metric | MAPE before | MAPE after | bias before | bias after | held-out calibrated MAPE before | after | n before / after |",
             "|" + " --- |" * 10]
    for key in sorted(set(b) | set(a)):
        x, y = b.get(key, {}), a.get(key, {})
        lines.append(f"| {' | '.join(key)} | {x.get('mape', '-')} | {y.get('mape', '-')} | {x.get('bias', '-')} | {y.get('bias', '-')} | "
                     f"{x.get('mape_cal', '-')} | {y.get('mape_cal', '-')} | {x.get('n', '-')} / {y.get('n', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the comparison of the two files named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: compare_accuracy.py BEFORE.md AFTER.md", file=sys.stderr)
        return 1
    print(compare(Path(args[0]).read_text(), Path(args[1]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
