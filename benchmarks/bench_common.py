"""Helpers shared by the benchmark scripts: the machine's description, median timing, and
replacing one section of ``benchmarks/RESULTS.md``."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Callable, TypeVar

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

# Benchmarks time the work itself: with the table cache (guide_opt.table_cache) a second run would read its tables and
# plan checks back. It is off for every benchmark (and the processes they start); bench_table_cache.py, which measures
# the cache, gives its solves a folder of their own.
os.environ["GUIDE_OPT_CACHE_DIR"] = "off"
T = TypeVar("T")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def median_time(fn: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Run ``fn`` ``repeats`` times; return the median wall time (s) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table: the header row, its rule and one line per row of cells."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *("| " + " | ".join(r) + " |" for r in rows)]


def replace_results_section(heading: str, body: str) -> None:
    """Replace the body of the section titled ``heading`` (a ``## `` line) in RESULTS.md, up to the next ``## `` heading."""
    text = RESULTS.read_text()
    pattern = re.compile(rf"^({re.escape(heading)}\n)(.*?)(?=^## |\Z)", re.S | re.M)
    if not pattern.search(text):
        raise SystemExit(f"{RESULTS} has no '{heading}' heading")
    RESULTS.write_text(pattern.sub(lambda m: m.group(1) + "\n" + body.strip("\n") + "\n\n", text, count=1))


def replace_results_subsection(section: str, heading: str, body: str) -> None:
    """Replace (or append to ``section``, creating it at the end if missing) the ``### `` subsection ``heading`` of RESULTS.md."""
    text = RESULTS.read_text()
    if not re.search(rf"^{re.escape(section)}$", text, re.M):
        text = text.rstrip("\n") + f"\n\n{section}\n"
    pattern = re.compile(rf"^({re.escape(heading)}\n)(.*?)(?=^### |^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda m: m.group(1) + "\n" + body.strip("\n") + "\n\n", text, count=1)
    else:
        start = re.search(rf"^{re.escape(section)}$", text, re.M).end()
        nxt = re.compile(r"^## ", re.M).search(text, start)
        end = nxt.start() if nxt else len(text)
        text = text[:end].rstrip("\n") + f"\n\n{heading}\n\n" + body.strip("\n") + "\n\n" + text[end:]
    RESULTS.write_text(text.rstrip("\n") + "\n")
