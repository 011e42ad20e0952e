"""One wall-clock budget for a whole solve (:class:`Deadline`), shared by every step that searches.

``--time-limit-s`` is a total: the candidate build, the optimum's CP-SAT solve and its
tie-break, the plan-check rounds, the alternatives (top-2/3, best-throughput, minimum-latency)
and the binding-constraint explanation all draw on one :class:`Deadline` started before the
candidates are evaluated. The build itself is not interrupted (its work is fixed by the
problem); when it leaves less than :data:`MIN_SEARCH_SHARE` of the limit, the budget is
extended to that share (:meth:`Deadline.start_search`, reported as ``extended_s``) so that
the optimum is still searched for. Each CP-SAT call is given what is left
(:meth:`Deadline.call_limit_s`); optional work that finds the budget spent is skipped and
reported as such, never silently dropped.

The deadline also keeps the breakdown the JSON reports (:meth:`Deadline.timing`): seconds per
phase and the CP-SAT time summed over every call.
"""

from __future__ import annotations

import time
from typing import Callable

#: The least time a CP-SAT call is given once the budget is spent (s): enough to return its
#: presolve verdict (UNKNOWN when nothing was found), short enough not to overrun the limit.
MIN_CALL_S = 0.01
#: The share of the limit the search for the optimum always gets, however long the candidate
#: build took: a build that overruns the limit still leaves the solver this much (the budget
#: is extended, and the extension reported), so a tight limit costs alternatives, never the plan.
MIN_SEARCH_SHARE = 0.2


class Deadline:
    """A wall-clock budget of ``total_s`` seconds starting now, or at ``started`` (``clock``: seconds, monotonic).

    ``phase(name)`` charges the time until the next phase change to ``name``; ``cp_sat_s`` and
    ``cp_sat_calls`` sum every CP-SAT call made under this deadline (:func:`add_cp_sat_call`).
    """

    def __init__(self, total_s: float, *, clock: Callable[[], float] = time.perf_counter, started: float | None = None) -> None:
        self.total_s = float(total_s)
        self._clock = clock
        self.started = clock() if started is None else started
        self.cp_sat_s = 0.0
        self.cp_sat_calls = 0
        self.extended_s = 0.0
        self._phases: dict[str, float] = {}
        # a deadline that began earlier (``started``: a reading of ``clock``, e.g. the command's start)
        # charges the time until its first phase to ``startup`` (reading the problem, loading modules)
        self._phase: str | None = None if started is None else "startup"
        self._phase_started = self.started

    @classmethod
    def of(cls, limit: "Deadline | float") -> "Deadline":
        """``limit`` itself when it is a deadline, else a new one of ``limit`` seconds."""
        return limit if isinstance(limit, Deadline) else cls(limit)

    @property
    def limit_s(self) -> float:
        """The limit asked for (s): :attr:`total_s` without any extension of :meth:`start_search`."""
        return self.total_s - self.extended_s

    def elapsed_s(self) -> float:
        """Seconds since the deadline started."""
        return self._clock() - self.started

    def remaining_s(self) -> float:
        """Seconds left (negative once overrun)."""
        return self.total_s - self.elapsed_s()

    @property
    def expired(self) -> bool:
        """True once the whole budget is spent."""
        return self.remaining_s() <= 0.0

    def call_limit_s(self, cap_s: float | None = None) -> float:
        """The time limit of the next call: what is left, at most ``cap_s``, at least :data:`MIN_CALL_S`."""
        left = self.remaining_s() if cap_s is None else min(self.remaining_s(), cap_s)
        return max(left, MIN_CALL_S)

    def add_cp_sat_call(self, wall_s: float) -> None:
        """Count one CP-SAT call of ``wall_s`` seconds."""
        self.cp_sat_s += wall_s
        self.cp_sat_calls += 1

    def phase(self, name: str | None) -> None:
        """Charge the time since the last phase change to the current phase, then start ``name`` (None: stop)."""
        now = self._clock()
        if self._phase is not None:
            self._phases[self._phase] = self._phases.get(self._phase, 0.0) + now - self._phase_started
        self._phase, self._phase_started = name, now

    def phase_s(self, name: str) -> float:
        """Seconds charged so far to the phase ``name`` (0 when it never ran; a running phase counts up to now)."""
        running = self._clock() - self._phase_started if self._phase == name else 0.0
        return self._phases.get(name, 0.0) + running

    def start_search(self) -> None:
        """End the candidate build (phase ``space_build``) and start the ``solve`` phase with at least
        :data:`MIN_SEARCH_SHARE` of the limit left: a build that used more extends the budget by the
        difference (``extended_s``)."""
        short = MIN_SEARCH_SHARE * self.total_s - self.remaining_s()
        if short > 0.0:
            self.total_s += short
            self.extended_s += short
        self.phase("solve")

    def timing(self) -> dict[str, float | int]:
        """Seconds per phase so far (``<phase>_s``, the build first when it ran under this deadline), the CP-SAT
        time and call count, the limit, any extension of it (:meth:`start_search`) and the time used."""
        self.phase(self._phase)  # close the running phase's interval without ending it
        out: dict[str, float | int] = {f"{name}_s": round(seconds, 4) for name, seconds in self._phases.items()}
        out |= {"cp_sat_s": round(self.cp_sat_s, 4), "cp_sat_calls": self.cp_sat_calls,
                "time_limit_s": round(self.limit_s, 4)}
        if self.extended_s > 0.0:
            out["extended_s"] = round(self.extended_s, 4)
        out["used_s"] = round(self.elapsed_s(), 4)
        return out
