"""The exception raised for bad input, and its one-line rendering.

guide-opt raises :class:`InputError` for anything the *user* can fix (a wrong id, a
malformed file, an impossible option value). It always names the offending field and
the fix, so the CLI can print it as a single line and exit with code 1. Infeasible
problems are not errors: solvers return a ``Solution`` with status INFEASIBLE.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: names the field, what is wrong, and how to fix it.

    Attributes:
        field: dotted path of the offending input (``"models[0].slo.ttft_ms"``, ``"--gpu"``).
        problem: what is wrong with it.
        fix: what the user should do instead.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}; {fix}")


def closest_ids(wanted: str, known: list[str], limit: int = 3) -> list[str]:
    """Return up to ``limit`` ids from ``known`` that look like ``wanted`` (for 'did you mean')."""
    import difflib

    return difflib.get_close_matches(wanted, known, n=limit, cutoff=0.5)


def unknown_id_error(field: str, wanted: str, known: list[str], kind: str) -> InputError:
    """Build the standard error for an id that is not in the catalog."""
    near = closest_ids(wanted, known)
    hint = f"did you mean {', '.join(near)}?" if near else f"known {kind} ids: {', '.join(sorted(known))}"
    return InputError(field, f"unknown {kind} id '{wanted}'", hint)
