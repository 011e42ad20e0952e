"""Broken and hostile endpoints: each gives one clear message, and what was measured is kept.

The misbehaving server here is deliberately not an inference server: it answers every request
with one specific fault (HTTP 500, a JSON answer to a streaming request, a stream that stalls,
SSE garbage) so each failure path is exercised on a real socket.
"""

from __future__ import annotations

import csv
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from guide_opt.characterize.sse import Chunk, StreamFormatError, parse_line
from guide_opt.cli import main

GOOD_CHUNK = b'data: {"choices": [{"text": " w1", "index": 0}]}\n\n'


class FaultyHandler(BaseHTTPRequestHandler):
    """Path prefix selects the fault: /500, /json, /stall, /garbage, /half (one good answer, then 500s)."""

    served = 0

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _sse_headers(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        fault = self.path.split("/")[1]
        if fault == "500" or (fault == "half" and FaultyHandler.served >= 1):
            body = b'{"error": "CUDA out of memory"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif fault == "json":
            body = b'{"choices": [{"text": "all at once"}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif fault == "stall":
            self._sse_headers()
            self.wfile.write(GOOD_CHUNK)
            self.wfile.flush()
            time.sleep(3.0)
        elif fault == "garbage":
            self._sse_headers()
            self.wfile.write(GOOD_CHUNK + b"<html>502 Bad Gateway</html>\n\n")
        elif fault == "half":
            FaultyHandler.served += 1
            self._sse_headers()
            self.wfile.write(GOOD_CHUNK * 4 + b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def faulty_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FaultyHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _characterize(url: str, out, *extra: str) -> int:
    return main(["characterize", "--endpoint", url, "--model", "m", "--input-tokens", "4", "--output-tokens", "4", "--max-users", "2",
                 "--level-duration-s", "2", "--max-requests-per-level", "3", "--stall-timeout-s", "0.5", "--out", str(out), *extra])


def _requests(out) -> list[dict]:
    with open(out / "requests.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("fault, message", [
    ("500", "HTTP 500: {\"error\": \"CUDA out of memory\"}"),
    ("json", "answered without streaming (content-type application/json"),
    ("stall", "the stream stalled: no data for 0.5 s"),
    ("garbage", "malformed SSE line '<html>502 Bad Gateway</html>'"),
])
def test_a_faulty_endpoint_fails_its_requests_with_a_clear_message(faulty_url, tmp_path, capsys, fault, message):
    code = _characterize(f"{faulty_url}/{fault}", tmp_path)
    err = capsys.readouterr().err
    assert code == 1  # nothing succeeded
    assert "every request at 1 user(s) failed" in err and message in err
    rows = _requests(tmp_path)
    assert rows and all(r["success"] == "false" and message in r["error"] for r in rows)
    assert "Traceback" not in err


def test_connection_refused_stops_at_once_and_keeps_the_files(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = _characterize(f"http://127.0.0.1:{port}", tmp_path)
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot connect to http://127.0.0.1:{port}/v1/completions" in err and "is the server running" in err
    assert len(_requests(tmp_path)) == 1 and (tmp_path / "summary.csv").is_file()


def test_measurements_before_a_failure_are_kept(faulty_url, tmp_path, capsys):
    # /half answers one request well (4 tokens), then only HTTP 500s: the good one stays measured
    FaultyHandler.served = 0
    code = _characterize(f"{faulty_url}/half", tmp_path)
    capsys.readouterr()
    rows = _requests(tmp_path)
    good = [r for r in rows if r["success"] == "true"]
    assert code == 0 and len(good) == 1 and good[0]["output_tokens"] == "4"
    assert any("HTTP 500" in r["error"] for r in rows)


@pytest.mark.parametrize("line, chunk", [
    ("", None),
    (": keep-alive", None),
    ("event: message", None),
    ('data: {"choices": [{"text": " a"}]}', Chunk(text=" a")),
    ('data: {"choices": [{"delta": {"content": "b"}}]}', Chunk(text="b")),
    ('data: {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}', Chunk(prompt_tokens=7, completion_tokens=3)),
    ("data: [DONE]", Chunk(done=True)),
    ('data: {"error": {"message": "overloaded"}}', Chunk(error="overloaded")),
])
def test_sse_lines(line, chunk):
    assert parse_line(line) == chunk


@pytest.mark.parametrize("line", ["garbage", "data: {not json", "data: [1, 2]", "foo: bar"])
def test_sse_garbage_is_named(line):
    with pytest.raises(StreamFormatError, match="malformed SSE"):
        parse_line(line)
