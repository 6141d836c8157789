"""Model delivery over HTTP (model_server.fetch) against a real HTTP server on loopback: the bytes, the checks
and the failures an init container meets."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_server.fetch import FetchError, FetchPolicy, _check_framing, fetch, shown, write_termination_message

MODEL = bytes(range(256)) * 4096  # 1 MiB
MODEL_SHA256 = hashlib.sha256(MODEL).hexdigest()
NO_WAIT = FetchPolicy(backoff_seconds=0.0, timeout_seconds=5.0)


class ModelStore(http.server.ThreadingHTTPServer):
    """Serves the model at /model.onnx; /flaky answers 503 ``failures`` times first; /short declares more
    bytes than it sends; /unframed sends part of it with no length, then closes; /gzip sends it compressed;
    /trickle sends a byte every 50 ms (at most 100); /loop redirects to itself; /moved redirects to the model;
    /chatty is a 404 with a long reason; anything else is 404. Counts requests per path and keeps the last
    request's headers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = 0
        self.requests: dict[str, int] = {}
        self.headers: dict[str, str] = {}
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: ModelStore

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.requests[path] = self.server.requests.get(path, 0) + 1
            failing = path == "/flaky" and self.server.requests[path] <= self.server.failures
            self.server.headers = dict(self.headers.items())
        if path in ("/moved", "/loop"):
            self.send_response(302)
            self.send_header("Location", "/model.onnx" if path == "/moved" else "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif failing:
            self.send_error(503)
        elif path in ("/model.onnx", "/flaky"):
            self._body(MODEL)
        elif path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", str(len(MODEL)))
            self.end_headers()
            self.wfile.write(MODEL[:1000])
            self.close_connection = True
        elif path == "/unframed":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(MODEL[:1000])  # then the connection closes: half a file that looks whole
            self.close_connection = True
        elif path == "/gzip":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", "20")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + bytes(18))
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(MODEL)))
            self.end_headers()
            for byte in MODEL[:100]:  # bounded: the handler stops by itself
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    break
                time.sleep(0.05)
            self.close_connection = True
        elif path == "/chatty":
            self.send_response(404, "Not Found " + "x" * 600 + " fetched OK, ignore this failure")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def _body(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def store() -> Iterator[ModelStore]:
    server = ModelStore()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_model_is_fetched_checked_and_renamed_into_place(store: ModelStore, tmp_path: Path) -> None:
    dest = tmp_path / "models" / "model.onnx"
    assert fetch(f"{store.url}/model.onnx", dest, sha256=MODEL_SHA256, policy=NO_WAIT) == dest
    assert dest.read_bytes() == MODEL
    assert list(dest.parent.iterdir()) == [dest]  # no .part left behind


def test_a_file_already_there_with_the_right_sha256_is_kept(store: ModelStore, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    fetch(f"{store.url}/model.onnx", dest, sha256=MODEL_SHA256, policy=NO_WAIT)
    fetch(f"{store.url}/model.onnx", dest, sha256=MODEL_SHA256, policy=NO_WAIT)
    assert store.requests["/model.onnx"] == 1


def test_a_file_already_there_with_another_sha256_is_fetched_again(store: ModelStore, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    dest.write_bytes(b"an older model")
    fetch(f"{store.url}/model.onnx", dest, sha256=MODEL_SHA256, policy=NO_WAIT)
    assert dest.read_bytes() == MODEL


def test_a_sha256_mismatch_is_final_and_leaves_no_file(store: ModelStore, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    with pytest.raises(FetchError, match=f"has sha256 {MODEL_SHA256}, expected 0000"):
        fetch(f"{store.url}/model.onnx", dest, sha256="0" * 64, policy=NO_WAIT)
    assert not list(tmp_path.iterdir())
    assert store.requests["/model.onnx"] == 1


def test_server_errors_are_tried_again_with_a_doubling_back_off(store: ModelStore, tmp_path: Path) -> None:
    store.failures = 2
    waits: list[float] = []
    policy = FetchPolicy(backoff_seconds=0.5, timeout_seconds=5.0)
    fetch(f"{store.url}/flaky", tmp_path / "model.onnx", sha256=MODEL_SHA256, policy=policy, sleep=waits.append)
    assert waits == [0.5, 1.0]
    assert store.requests["/flaky"] == 3


def test_a_server_that_keeps_failing_is_given_up_on_with_the_reason(store: ModelStore, tmp_path: Path) -> None:
    store.failures = 10
    with pytest.raises(FetchError, match=r"/flaky: HTTP 503 Service Unavailable \(gave up after 3 attempts\)"):
        fetch(f"{store.url}/flaky", tmp_path / "m.onnx", policy=FetchPolicy(attempts=3, backoff_seconds=0.0))
    assert store.requests["/flaky"] == 3


def test_a_missing_model_is_final_at_once(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"/nothing-here.onnx: HTTP 404 Not Found$"):
        fetch(f"{store.url}/nothing-here.onnx", tmp_path / "m.onnx", policy=NO_WAIT)
    assert store.requests["/nothing-here.onnx"] == 1


def test_a_body_cut_short_is_tried_again_and_never_renamed_into_place(store: ModelStore, tmp_path: Path) -> None:
    dest = tmp_path / "m.onnx"
    with pytest.raises(FetchError, match=r"/short: .*\(gave up after 2 attempts\)"):
        fetch(f"{store.url}/short", dest, policy=FetchPolicy(attempts=2, backoff_seconds=0.0, timeout_seconds=5.0))
    assert store.requests["/short"] == 2
    assert not list(tmp_path.iterdir())


def test_a_model_over_the_size_limit_is_refused_from_its_declared_length(store: ModelStore, tmp_path: Path) -> None:
    limit = FetchPolicy(max_bytes=len(MODEL) - 1, backoff_seconds=0.0)
    with pytest.raises(FetchError, match=f"is {len(MODEL)} bytes, over the limit of {len(MODEL) - 1} bytes"):
        fetch(f"{store.url}/model.onnx", tmp_path / "m.onnx", policy=limit)
    assert store.requests["/model.onnx"] == 1
    assert not list(tmp_path.iterdir())


def test_redirects_are_followed(store: ModelStore, tmp_path: Path) -> None:
    dest = fetch(f"{store.url}/moved", tmp_path / "m.onnx", sha256=MODEL_SHA256, policy=NO_WAIT)
    assert dest.read_bytes() == MODEL


def test_nothing_listens_is_a_connection_failure_tried_again(tmp_path: Path) -> None:
    with ModelStore() as closed:
        url = closed.url  # the port is released when the server closes
    with pytest.raises(FetchError, match=r"ConnectError.*\(gave up after 2 attempts\)"):
        fetch(f"{url}/model.onnx", tmp_path / "m.onnx", policy=FetchPolicy(attempts=2, backoff_seconds=0.0))


def test_only_http_and_https_are_fetched(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="only http:// and https://"):
        fetch("ftp://example.invalid/m.onnx", tmp_path / "m.onnx")


def test_credentials_and_signatures_never_reach_the_log() -> None:
    assert shown("https://user:secret@store.example:8443/m/model.onnx?X-Amz-Signature=abc#x") == (
        "https://store.example:8443/m/model.onnx"
    )


def test_the_command_writes_the_reason_to_the_termination_log_and_exits_1(store: ModelStore, tmp_path: Path) -> None:
    termination = tmp_path / "termination-log"
    termination.touch()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_server.fetch",
            f"{store.url}/model.onnx?token=hidden",
            str(tmp_path / "m.onnx"),
            "--sha256",
            "1" * 64,
            "--termination-log",
            str(termination),
            "--log-format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert termination.read_text() == (
        f"model not fetched: {store.url}/model.onnx has sha256 {MODEL_SHA256}, expected {'1' * 64}"
    )
    assert "hidden" not in done.stderr
    assert '"model not fetched"' in done.stderr


def test_the_command_fetches_and_exits_0(store: ModelStore, tmp_path: Path) -> None:
    dest = tmp_path / "m.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "model_server.fetch", f"{store.url}/model.onnx", str(dest), "--sha256", MODEL_SHA256],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert dest.read_bytes() == MODEL
    assert "model fetched" in done.stderr


def test_a_body_without_a_length_is_refused_since_a_cut_could_not_be_told_from_its_end(
    store: ModelStore, tmp_path: Path
) -> None:
    with pytest.raises(FetchError, match=r"/unframed: the server sent no Content-Length"):
        fetch(f"{store.url}/unframed", tmp_path / "m.onnx", policy=NO_WAIT)
    assert store.requests["/unframed"] == 1
    assert not list(tmp_path.iterdir())


def test_no_compression_is_asked_for_and_a_compressed_body_is_refused(store: ModelStore, tmp_path: Path) -> None:
    fetch(f"{store.url}/model.onnx", tmp_path / "m.onnx", policy=NO_WAIT)
    assert store.headers.get("Accept-Encoding") == "identity"
    with pytest.raises(FetchError, match=r"/gzip: the server sent the file with Content-Encoding gzip"):
        fetch(f"{store.url}/gzip", tmp_path / "g.onnx", policy=NO_WAIT)
    assert store.requests["/gzip"] == 1
    assert not (tmp_path / "g.onnx").exists() and not (tmp_path / "g.onnx.part").exists()


def test_a_server_that_trickles_is_given_up_on_at_the_deadline(store: ModelStore, tmp_path: Path) -> None:
    policy = FetchPolicy(backoff_seconds=0.0, timeout_seconds=5.0, deadline_seconds=0.5)
    with pytest.raises(FetchError, match=r"/trickle: not fetched within 0s \(\d+ bytes so far\)"):
        fetch(f"{store.url}/trickle", tmp_path / "m.onnx", policy=policy)
    assert store.requests["/trickle"] == 1  # final: another attempt would meet the same deadline
    assert not list(tmp_path.iterdir())


def test_a_redirect_loop_is_a_failure_in_one_line(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"^http://127.0.0.1:\d+/loop: TooManyRedirects: [^\n]+$"):
        fetch(f"{store.url}/loop", tmp_path / "m.onnx", policy=NO_WAIT)
    assert not list(tmp_path.iterdir())


def test_an_address_that_cannot_be_parsed_is_a_failure_that_shows_none_of_it(tmp_path: Path) -> None:
    assert shown("http://127.0.0.1:abc/m.onnx?sig=secret") == "(an unparsable URI)"
    with pytest.raises(FetchError, match=r"^\(an unparsable URI\): InvalidURL: "):
        fetch("http://127.0.0.1:abc/m.onnx?sig=secret", tmp_path / "m.onnx", policy=NO_WAIT)


def test_a_redirect_from_https_to_http_is_not_followed() -> None:
    moved = httpx.Response(
        200, headers={"Content-Length": "3"}, request=httpx.Request("GET", "http://store.example/m.onnx")
    )
    with pytest.raises(FetchError, match=r"redirected from https to http://"):
        _check_framing("https://store.example/m.onnx", "https://store.example/m.onnx", moved)
    _check_framing("http://store.example/m.onnx", "http://store.example/m.onnx", moved)  # http to http is fine


def test_a_server_reason_is_cut_short_and_the_termination_message_keeps_its_end(
    store: ModelStore, tmp_path: Path
) -> None:
    with pytest.raises(FetchError) as failure:
        fetch(f"{store.url}/chatty", tmp_path / "m.onnx", policy=NO_WAIT)
    assert "HTTP 404 Not Found xxx" in str(failure.value) and "fetched OK" not in str(failure.value)
    termination = tmp_path / "termination-log"
    termination.touch()
    write_termination_message(termination, "model not fetched: " + "u" * 5000 + ": HTTP 404 Not Found")
    assert len(termination.read_text()) == 4096 and termination.read_text().endswith(": HTTP 404 Not Found")
