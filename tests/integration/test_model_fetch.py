"""Model delivery over HTTP (model_server.fetch) against a real HTTP server on loopback: the bytes, the checks
and the failures an init container meets."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from model_server.fetch import FetchError, FetchPolicy, fetch, shown

MODEL = bytes(range(256)) * 4096  # 1 MiB
MODEL_SHA256 = hashlib.sha256(MODEL).hexdigest()
NO_WAIT = FetchPolicy(backoff_seconds=0.0, timeout_seconds=5.0)


class ModelStore(http.server.ThreadingHTTPServer):
    """Serves the model at /model.onnx; /flaky answers 503 ``failures`` times first; /short declares more
    bytes than it sends; /moved redirects to the model; anything else is 404. Counts requests per path."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = 0
        self.requests: dict[str, int] = {}
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
        if path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/model.onnx")
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
