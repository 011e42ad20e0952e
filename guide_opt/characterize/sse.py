"""Reading an OpenAI-compatible streaming answer (server-sent events), one line at a time (pure).

An OpenAI-style stream is lines of ``data: {json}`` separated by blank lines and ended by
``data: [DONE]``; ``event:``, ``id:``, ``retry:`` fields and ``:`` comment lines are legal SSE
and ignored. Anything else -- a line with no field name, a ``data:`` payload that is not JSON
or not an object -- is malformed and reported with the line, so a hostile or broken endpoint
gets a clear message instead of a parse traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: SSE field names other than ``data`` (legal, ignored).
_IGNORED_FIELDS = ("event", "id", "retry")


class StreamFormatError(ValueError):
    """A line of the stream that is not valid SSE or not an OpenAI chunk."""


@dataclass(frozen=True)
class Chunk:
    """What one ``data:`` event carried: generated text, token counts and timings the server reported, an error.

    server_prompt_ms / server_ms_per_token: the server's own prompt-processing time and decode
    time per generated token, where it reports them (llama.cpp's ``timings``).
    """

    text: str = ""
    done: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    server_prompt_ms: float | None = None
    server_ms_per_token: float | None = None


def _chunk_text(payload: dict[str, Any]) -> str:
    """The generated text of a completions (``choices[0].text``) or chat (``choices[0].delta.content``) chunk."""
    choices = payload.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    if isinstance(choice.get("text"), str):
        return choice["text"]
    delta = choice.get("delta")
    if isinstance(delta, dict) and isinstance(delta.get("content"), str):
        return delta["content"]
    return ""


def parse_line(line: str) -> Chunk | None:
    """One line of the stream as a :class:`Chunk`, or None for blank lines, comments and ignored fields.

    Raises :class:`StreamFormatError` (with the offending line, shortened) for anything else.
    """
    line = line.rstrip("\r")
    if not line or line.startswith(":"):
        return None
    name, colon, value = line.partition(":")
    if not colon:
        raise StreamFormatError(f"malformed SSE line {line[:80]!r} (expected 'data: ...')")
    if name in _IGNORED_FIELDS:
        return None
    if name != "data":
        raise StreamFormatError(f"malformed SSE line {line[:80]!r} (unknown field '{name[:20]}')")
    value = value[1:] if value.startswith(" ") else value
    if value.strip() == "[DONE]":
        return Chunk(done=True)
    try:
        payload = json.loads(value)
    except json.JSONDecodeError:
        raise StreamFormatError(f"malformed SSE data {value[:80]!r} (not JSON)") from None
    if not isinstance(payload, dict):
        raise StreamFormatError(f"malformed SSE data {value[:80]!r} (not a JSON object)")
    if "error" in payload:
        err = payload["error"]
        message = err.get("message") if isinstance(err, dict) else err
        return Chunk(error=str(message)[:200])
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    # llama.cpp's server adds its own measurements to the last chunk: "timings" {prompt_ms, predicted_per_token_ms, ...}
    timings = payload.get("timings") if isinstance(payload.get("timings"), dict) else {}
    return Chunk(text=_chunk_text(payload), prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                 server_prompt_ms=_number(timings.get("prompt_ms")), server_ms_per_token=_number(timings.get("predicted_per_token_ms")))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
