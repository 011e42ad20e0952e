"""One streamed completion request and what it measured (:class:`RequestRecord`).

Timestamps come from ``time.perf_counter`` on the client, as LLM-Pilot measures (Sec. III-C:
"logs all generated tokens and the timestamps of their arrival to the client"): TTFT is the
time from sending the request to the first chunk that carries text, each inter-token latency
(ITL) the gap between two consecutive text chunks, E2E the time to the end of the stream.

Failures never raise: they become a record with ``success=False`` and an ``error`` that says
what happened. :class:`EndpointDown` is the exception: a refused connection means no request
can succeed, so the run stops (with what it measured so far).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import httpx

from guide_opt.characterize.sse import StreamFormatError, parse_line

#: Common English words that most tokenizers encode as one token each (with the leading space).
#: Prompts are random sequences of them, different for every request, so that a server's prefix
#: cache cannot answer one prompt from another (a repeated prompt would hide the prefill cost).
PROMPT_WORDS = ("the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with", "his",
                "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were",
                "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if",
                "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make",
                "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way",
                "could", "people", "my", "than", "first", "water", "been", "call", "who", "its", "now", "find")


class EndpointDown(RuntimeError):
    """The endpoint refused the connection (or the address does not resolve): stop the run."""


@dataclass
class RequestRecord:
    """One request of a load test. Times in ms from the request's send; ``start_s`` from the run's start.

    input_tokens / output_tokens: the server's usage counts when it reported them, else the
    prompt length asked for and the number of text chunks received. itl_ms: gaps between
    consecutive text chunks. error: why a request failed ('' when it succeeded).
    server_prompt_ms / server_ms_per_token: the server's own timings where it reports them.
    """

    users: int
    user: int
    start_s: float
    input_tokens: int
    requested_output_tokens: int
    output_tokens: int = 0
    ttft_ms: float | None = None
    e2e_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    success: bool = False
    error: str = ""
    server_prompt_ms: float | None = None
    server_ms_per_token: float | None = None

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first: (E2E - TTFT) / (output tokens - 1)."""
        if not self.success or self.ttft_ms is None or self.e2e_ms is None or self.output_tokens < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.output_tokens - 1)


def prompt_of(input_tokens: int, seed: int) -> str:
    """A prompt of about ``input_tokens`` tokens: words of :data:`PROMPT_WORDS` drawn under ``seed``."""
    rng = random.Random(seed)
    return " ".join(rng.choices(PROMPT_WORDS, k=max(1, input_tokens)))


def request_body(model: str, input_tokens: int, output_tokens: int, *, ignore_eos: bool, seed: int = 0) -> dict:
    """The ``/v1/completions`` request: streamed, greedy, ``max_tokens`` output tokens, usage requested.

    ``ignore_eos`` (vLLM, SGLang, llama.cpp) keeps generating to ``max_tokens`` so every answer
    has the planned length; servers that reject unknown fields need it off.
    """
    body = {"model": model, "prompt": prompt_of(input_tokens, seed), "max_tokens": output_tokens, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    return body


def _http_error(status: int, body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return f"HTTP {status}: {text[:160] or '(empty body)'}"


async def stream_request(client: httpx.AsyncClient, url: str, body: dict, record: RequestRecord, *, stall_timeout_s: float) -> RequestRecord:
    """Send ``body`` to ``url`` (streaming), fill ``record`` in place and return it.

    Failures are recorded, not raised, except a refused connection (:class:`EndpointDown`).
    A stream with no bytes for ``stall_timeout_s`` fails as stalled.
    """
    sent = time.perf_counter()
    last_token = None
    chunks = 0
    reported_prompt = reported_completion = None
    try:
        async with client.stream("POST", url, json=body, timeout=httpx.Timeout(stall_timeout_s, connect=min(stall_timeout_s, 10.0))) as response:
            if response.status_code != 200:
                record.error = _http_error(response.status_code, await response.aread())
                if body.get("ignore_eos") and "ignore_eos" in record.error:
                    record.error += " (this server does not take ignore_eos: pass --no-ignore-eos)"
                return record
            content_type = response.headers.get("content-type", "")
            if "text/event-stream" not in content_type:
                head = (await response.aread())[:80].decode("utf-8", "replace")
                record.error = (f"the endpoint answered without streaming (content-type {content_type or 'missing'}, {head!r}); "
                                "it must support stream=true with server-sent events")
                return record
            async for line in response.aiter_lines():
                chunk = parse_line(line)
                if chunk is None:
                    continue
                if chunk.error:
                    record.error = f"the server reported an error in the stream: {chunk.error}"
                    return record
                if chunk.done:
                    break
                reported_prompt = chunk.prompt_tokens or reported_prompt
                reported_completion = chunk.completion_tokens or reported_completion
                record.server_prompt_ms = chunk.server_prompt_ms if chunk.server_prompt_ms is not None else record.server_prompt_ms
                record.server_ms_per_token = chunk.server_ms_per_token if chunk.server_ms_per_token is not None else record.server_ms_per_token
                if chunk.text:
                    now = time.perf_counter()
                    if last_token is None:
                        record.ttft_ms = (now - sent) * 1e3
                    else:
                        record.itl_ms.append((now - last_token) * 1e3)
                    last_token = now
                    chunks += 1
    except httpx.ConnectError as exc:
        raise EndpointDown(f"cannot connect to {url} ({exc or 'connection refused'}): is the server running and listening there?") from None
    except httpx.TimeoutException:
        record.error = f"the stream stalled: no data for {stall_timeout_s:g} s (--stall-timeout-s)"
        return record
    except StreamFormatError as exc:
        record.error = str(exc)
        return record
    except httpx.HTTPError as exc:
        record.error = f"connection error: {type(exc).__name__}: {str(exc)[:120]}"
        return record
    record.e2e_ms = (time.perf_counter() - sent) * 1e3
    if chunks == 0:
        record.error = "the stream ended without any generated text"
        return record
    record.output_tokens = int(reported_completion) if reported_completion else chunks
    if reported_prompt:
        record.input_tokens = int(reported_prompt)
    record.success = True
    return record
