"""``guide-opt characterize``: load-test a running OpenAI-compatible endpoint (LLM-Pilot's characterization)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from pathlib import Path
from urllib.parse import urlsplit

import click

from guide_opt.characterize import CalibrationLabels, LoadPlan, run_characterization, summarize, user_schedule, write_outputs
from guide_opt.characterize.runner import LLM_PILOT_LEVEL_S
from guide_opt.cli.app import cli
from guide_opt.cli.common import positive_int
from guide_opt.cli.output import echo_json, echo_rows, fmt_number, format_option
from guide_opt.errors import InputError

#: Exit code when Ctrl-C ended the run (the files hold what was measured).
EXIT_INTERRUPTED = 130


def completions_url(endpoint: str) -> str:
    """The ``/v1/completions`` URL of ``endpoint`` (a base URL, ``.../v1`` or the full URL)."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError("--endpoint", f"'{endpoint}' is not an http(s) URL", "give the server's base URL, e.g. http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if path.endswith("/completions"):
        return endpoint
    return endpoint.rstrip("/") + ("/completions" if path.endswith("/v1") else "/v1/completions")


def _labels(catalog_llm, gpu, framework, tp, quantization) -> CalibrationLabels | None:
    given = {"--llm": catalog_llm, "--gpu": gpu, "--framework": framework}
    if not any(given.values()):
        return None
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise InputError(missing[0], "needed with the other calibration labels", "give --llm, --gpu and --framework (catalog ids) together, or none")
    from guide_opt.catalog import load_catalog
    from guide_opt.errors import unknown_id_error

    catalog = load_catalog()
    for option, value, known, kind in (("--llm", catalog_llm, catalog.llms, "LLM"), ("--gpu", gpu, catalog.gpus, "GPU"),
                                       ("--framework", framework, catalog.frameworks, "framework")):
        if value not in known:
            raise unknown_id_error(option, value, list(known), kind)
    catalog.quantization(quantization, field="--quantization")
    return CalibrationLabels(catalog_llm, gpu, framework, tp, quantization)


@cli.command("characterize")
@click.option("--endpoint", required=True, help="Base URL of the OpenAI-compatible server, e.g. http://127.0.0.1:8000 (or its /v1/completions URL).")
@click.option("--model", required=True, help="Model name the server serves (its --served-model-name).")
@click.option("--workload", default=None, help="Request lengths: a preset (short, long, conversational), a trace CSV (LLM-Pilot's generator) or a YAML/JSON workload file.")
@click.option("--input-tokens", type=positive_int, default=None, help="Fixed prompt length (with --output-tokens) instead of --workload.")
@click.option("--output-tokens", type=positive_int, default=None, help="Fixed output length.")
@click.option("--min-users", type=positive_int, default=1, show_default=True, help="Smallest user count (powers of two from here).")
@click.option("--max-users", type=positive_int, default=128, show_default=True, help="Largest user count (LLM-Pilot: 1, 2, 4, ..., 128).")
@click.option("--level-duration-s", type=click.FloatRange(min=0, min_open=True), default=LLM_PILOT_LEVEL_S, show_default=True,
              help="Seconds of load per user count (LLM-Pilot: 2 minutes).")
@click.option("--max-requests-per-level", type=positive_int, default=1000, show_default=True, help="Requests sent per user count at most.")
@click.option("--max-total-s", type=click.FloatRange(min=0, min_open=True), default=1800.0, show_default=True, help="No new request after this many seconds.")
@click.option("--stall-timeout-s", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True, help="A stream silent this long fails.")
@click.option("--request-timeout-s", type=click.FloatRange(min=0, min_open=True), default=600.0, show_default=True, help="A request not answered in full by then fails.")
@click.option("--ignore-eos/--no-ignore-eos", default=True, show_default=True, help="Ask the server to generate exactly the requested output tokens (vLLM, SGLang, llama.cpp).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the request lengths.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("characterization"), show_default=True,
              help="Folder for requests.csv, summary.csv and calibration.csv.")
@click.option("--llm", "catalog_llm", default=None, help="Calibration label: catalog LLM id the endpoint serves (with --gpu and --framework).")
@click.option("--gpu", default=None, help="Calibration label: catalog GPU id it runs on.")
@click.option("--framework", default=None, help="Calibration label: catalog framework id (vllm, sglang, tensorrt-llm, ...).")
@click.option("--tp", type=positive_int, default=1, show_default=True, help="Calibration label: tensor-parallel degree.")
@click.option("--quantization", default="bf16", show_default=True, help="Calibration label: quantization id.")
@format_option
def characterize_command(endpoint, model, workload, input_tokens, output_tokens, min_users, max_users, level_duration_s, max_requests_per_level,
                         max_total_s, stall_timeout_s, request_timeout_s, ignore_eos, seed, out_dir, catalog_llm, gpu, framework, tp,
                         quantization, output_format) -> int:
    """Load-test a running endpoint as LLM-Pilot does: closed loops of 1, 2, 4, ..., 128 users, each
    sending streamed requests back to back; per request TTFT, inter-token latencies, E2E and success
    (requests.csv), per user count median/p90 TTFT, nTTFT, ITL, throughput and failures (summary.csv),
    and, with --llm/--gpu/--framework, the rows 'guide-opt calibrate --data' reads (calibration.csv).
    Ctrl-C stops the run and keeps what was measured.
    """
    from guide_opt.cli.simulate_cmd import resolve_lengths

    url = completions_url(endpoint)
    labels = _labels(catalog_llm, gpu, framework, tp, quantization)
    if min_users > max_users:
        raise InputError("--min-users", f"{min_users} is above --max-users {max_users}", "lower --min-users or raise --max-users")
    users = user_schedule(max_users, min_users)
    if not users:
        raise InputError("--max-users", f"no power of two between {min_users} and {max_users}", "widen the range")
    distribution = resolve_lengths(workload, input_tokens, output_tokens)
    plan = LoadPlan(url, model, users, level_duration_s, max_requests_per_level, max_total_s, stall_timeout_s, request_timeout_s, ignore_eos, seed)
    records: list = []
    say = lambda line: click.echo(f"guide-opt: {line}", err=True)  # noqa: E731 - progress goes to stderr, results to stdout
    say(f"load-testing {url} ({model}): {', '.join(map(str, users))} user(s), up to {level_duration_s:g} s each")
    outcome = None
    try:
        outcome = asyncio.run(_run(plan, distribution, records, say))
    finally:
        levels = outcome.levels if outcome else []
        summaries = summarize(levels, records)
        written = write_outputs(out_dir, records, summaries, labels)
    stopped = outcome.stopped if outcome else "interrupted"
    if output_format == "json":
        echo_json({"endpoint": url, "model": model, "stopped": stopped, "files": {k: str(v) for k, v in written.items()},
                   "levels": [dataclasses.asdict(s) for s in summaries]})
    else:
        _print_summary(summaries)
        click.echo("")
        click.echo("wrote " + ", ".join(str(p) for p in written.values()))
        if labels is None:
            click.echo("no calibration.csv: pass --llm, --gpu and --framework (catalog ids) to label the rows 'guide-opt calibrate --data' reads")
    if stopped:
        say(f"stopped early: {stopped}; the files hold what was measured")
    if stopped == "interrupted":
        return EXIT_INTERRUPTED
    return 0 if any(s.requests > s.failures for s in summaries) else 1


async def _run(plan: LoadPlan, distribution, records: list, say):
    """The run, with Ctrl-C (SIGINT) turned into a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, stop.set)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        pass
    try:
        def level_done(level, level_records) -> None:
            failed = sum(not r.success for r in level_records)
            say(f"{level.users:>3} user(s): {len(level_records)} request(s), {failed} failed, {level.duration_s:.1f} s")

        ticker = asyncio.create_task(_tick(records, say))
        try:
            return await run_characterization(plan, distribution, records, stop=stop, progress=level_done)
        finally:
            ticker.cancel()
    finally:
        try:
            loop.remove_signal_handler(signal.SIGINT)
        except (NotImplementedError, RuntimeError, ValueError):
            pass


#: Seconds between two "still running" progress lines within a level.
TICK_S = 15.0


async def _tick(records: list, say) -> None:
    """Every :data:`TICK_S` seconds, how many requests were sent and answered so far (levels last minutes)."""
    while True:
        await asyncio.sleep(TICK_S)
        done = [r for r in records if r.success or r.error]
        say(f"      ... {len(records)} request(s) sent, {len(done)} answered, {sum(bool(r.error) for r in done)} failed so far")


def _print_summary(summaries) -> None:
    rows = [[str(s.users), str(s.requests), str(s.failures), fmt_number(s.ttft_median_ms), fmt_number(s.ttft_p90_ms),
             fmt_number(s.nttft_median_ms), fmt_number(s.itl_median_ms), fmt_number(s.itl_p90_ms), fmt_number(s.tpot_mean_ms),
             fmt_number(s.throughput_tokens_per_s)] for s in summaries]
    echo_rows(["users", "requests", "failed", "TTFT p50 ms", "TTFT p90 ms", "nTTFT p50 ms/tok", "ITL p50 ms", "ITL p90 ms", "TPOT ms",
               "tokens/s"], rows)
