"""The work bounds guide-opt enforces on what a user gives it, and the helpers that check them.

Every number a user can give (problem-file keys, command-line flags, calibration and workload
files) is checked at the boundary: it must be finite and inside a documented range, and a value
outside gets one :class:`~guide_opt.errors.InputError` naming the field, the limit and the fix
(exit code 1). The ranges are far beyond any real deployment; they exist so that no input can
overflow the CP-SAT model's 64-bit integers (:func:`guide_opt.quanta.to_quanta`) or make a
run take unbounded memory or time. ``problems/README.md`` ("Limits") lists them for users.
"""

from __future__ import annotations

import math

from guide_opt.errors import InputError

#: Largest input file read (problem, calibration, workload YAML/JSON, benchmark CSV), bytes.
MAX_INPUT_FILE_BYTES = 16 * 2**20
#: Largest number of YAML nodes after aliases are expanded (an alias bomb is refused before it is built).
MAX_YAML_NODES = 200_000
#: Deepest YAML nesting accepted.
MAX_YAML_DEPTH = 64
#: LLMs in one problem (a fleet): its work is bounded by :data:`MAX_CANDIDATES`, not by this count.
MAX_MODELS = 1_000
#: Upper bound on the candidates one problem may ask for: LLMs x GPU types x engines x
#: quantizations x TP x PP x KV dtypes x batch sizes, counted before anything is evaluated.
MAX_CANDIDATES = 250_000
#: Requests one ``simulate`` run may serve (time and memory grow linearly: 100,000 took 18 s and 260 MB on a 2-core machine).
MAX_SIMULATED_REQUESTS = 200_000
#: Replicas one ``simulate`` run may put behind its load balancer.
MAX_SIMULATED_REPLICAS = 1_024
#: KV-cache blocks one simulated replica may be given (``simulate --num-gpu-blocks``): a billion blocks hold more than any GPU.
MAX_KV_BLOCKS = 10**9
#: Optuna trials one ``--refine`` run may ask for.
MAX_TRIALS = 100_000
#: Largest seed: CP-SAT's ``random_seed`` is a signed 32-bit integer.
MAX_SEED = 2**31 - 1
#: Longest wall-clock limit a solve accepts, seconds (one day).
MAX_TIME_LIMIT_S = 86_400.0
#: Largest request rate, requests/s.
MAX_REQUEST_RATE_PER_S = 1e6
#: Largest number of concurrent users.
MAX_CONCURRENT_USERS = 10_000_000
#: Longest prompt or answer, tokens (beyond every catalog LLM's context).
MAX_TOKENS = 10_000_000
#: Largest batch / max-num-seqs / max-batched-tokens.
MAX_BATCH = 1_000_000
#: Largest TP or PP degree.
MAX_PARALLEL_DEGREE = 64
#: Largest latency target, ms (one hour).
MAX_LATENCY_MS = 3_600_000.0
#: Largest budget, $/h.
MAX_BUDGET_PER_HOUR = 10_000_000.0
#: Price bounds per GPU-hour, $: the lower one is the cost quantum of the CP-SAT model.
MIN_PRICE_PER_GPU_HOUR, MAX_PRICE_PER_GPU_HOUR = 1e-6, 10_000.0
#: Largest GPU count (inventory per type, max_gpus).
MAX_GPUS = 100_000
#: Largest replica count per LLM.
MAX_REPLICAS = 10_000
#: Largest batch job, requests.
MAX_JOB_REQUESTS = 10**12
#: Latest batch-job deadline, hours (one year).
MAX_DEADLINE_H = 8_760.0
#: Largest SLO safety margin.
MAX_SLO_MARGIN = 100.0
#: Most entries in one list of choices (GPU ids, engines, TP degrees, batch sizes, ...).
MAX_CHOICES = 64
#: Largest size in an imported config.json (hidden size, layers, vocabulary, context, ...): keeps the
#: performance model's products far inside float range.
MAX_ARCH_SIZE = 2**31 - 1
#: Largest integer CP-SAT may be handed as one coefficient or bound (2**50: sums of many stay far below 2**63).
MAX_MODEL_INTEGER = 2**50


def check_finite(field: str, value: float, low: float | None = None, high: float | None = None, *, low_open: bool = False) -> float:
    """``value`` if it is a finite number within [``low``, ``high``] (``(low, high]`` with ``low_open``), else an :class:`InputError` naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(field, f"must be a finite number, got {value!r}", "give a plain number (not nan or inf)")
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(field, f"must be {'above' if low_open else 'at least'} {low:g}, got {value:g}", "give a larger value")
    if high is not None and value > high:
        raise InputError(field, f"{value:g} is above the limit of {high:g}", "give a smaller value (see problems/README.md, Limits)")
    return value


def read_text_file(path, field: str | None = None) -> str:
    """The UTF-8 text of ``path``, refusing a missing, oversized or binary file with an :class:`InputError`.

    ``field`` names the input in the message (default: the path itself).
    """
    from pathlib import Path

    path, field = Path(path), field or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_FILE_BYTES:
            raise InputError(field, f"the file has {size:,} bytes, above the limit of {MAX_INPUT_FILE_BYTES:,}", "give a smaller file")
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(field, f"cannot read the file ({exc.strerror or type(exc).__name__})", "check the path") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(field, f"not a UTF-8 text file (byte {exc.start} cannot be decoded)", "give the text file itself, not a binary") from None
    if "\x00" in text:
        raise InputError(field, "not a text file (it contains NUL bytes)", "give the text file itself, not a binary")
    return text


def check_yaml_node_size(node, field: str) -> None:
    """Refuse a composed YAML document whose expanded size exceeds :data:`MAX_YAML_NODES` or whose depth exceeds :data:`MAX_YAML_DEPTH`.

    Aliases share nodes, so the expanded size is counted per distinct node (memoized) without
    building the expansion: an alias bomb costs a few microseconds per distinct node here
    instead of gigabytes later. A node reached again while it is being counted is an alias
    to its own anchor (a recursive document), which is refused as well.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, depth)
    stack: list[tuple[object, bool]] = [(node, False)]
    open_nodes: set[int] = set()
    while stack:
        current, children_done = stack.pop()
        key = id(current)
        if children_done:
            open_nodes.discard(key)
            kids = _yaml_children(current)
            total = 1 + sum(sizes[id(k)][0] for k in kids)
            depth = 1 + max((sizes[id(k)][1] for k in kids), default=0)
            if total > MAX_YAML_NODES:
                raise InputError(field, f"the YAML expands to more than {MAX_YAML_NODES:,} values (aliases included)",
                                 "write the values out, or give a smaller file")
            if depth > MAX_YAML_DEPTH:
                raise InputError(field, f"the YAML nests deeper than {MAX_YAML_DEPTH} levels", "flatten the file")
            sizes[key] = (total, depth)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise InputError(field, "an alias refers to its own anchor (a recursive YAML document)", "remove the recursive alias")
        open_nodes.add(key)
        stack.append((current, True))
        if len(open_nodes) > MAX_YAML_DEPTH:
            raise InputError(field, f"the YAML nests deeper than {MAX_YAML_DEPTH} levels", "flatten the file")
        stack.extend((k, False) for k in _yaml_children(current) if id(k) not in sizes)


def _yaml_children(node) -> list:
    value = getattr(node, "value", None)
    if not isinstance(value, list):
        return []  # a scalar
    out = []
    for item in value:
        out.extend(item if isinstance(item, tuple) else (item,))  # mapping entries are (key, value) pairs
    return out


def check_writable_file(path, field: str):
    """``path`` as a Path when a file can be written there, else an :class:`InputError` naming ``field``.

    Checked before any work starts. The folder must already exist: guide-opt never creates
    folders the user did not name.
    """
    from pathlib import Path

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise InputError(field, f"'{path}' is a folder", "give a file name")
    if not folder.is_dir():
        raise InputError(field, f"the folder '{folder}' does not exist", "create it first, or write to an existing folder")
    existed = path.exists()
    try:  # a real probe: permission bits say little to root or on special file systems
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise InputError(field, f"cannot write '{path}' ({exc.strerror or type(exc).__name__})", "choose a writable location") from None
    if not existed:
        path.unlink(missing_ok=True)
    return path
