"""python -m model_server.fetch URI DEST [--sha256 HEX] [--max-bytes N] [--attempts N]

Fetches a model file over ``http://`` or ``https://`` to DEST, the way the model-server Pod's init container
does before the server starts (so a long download never counts against the server's startup probe):

- the body is streamed to ``DEST.part``, hashed as it arrives, and renamed to DEST only once it is complete
  and its SHA-256 matches ``--sha256`` (when given): the server never loads half a file or the wrong one;
- a DEST that is already there with the expected SHA-256 is kept (the Pod restarted with its emptyDir);
- the size is capped (``--max-bytes``): a Content-Length over it fails at once, a body that grows past it is cut;
- the bytes are the file itself: no content encoding is asked for, and a compressed answer is refused (its
  decoded size would be no bound on memory); an answer without a declared length or chunked framing is
  refused too (a cut connection could not be told from the end of the file);
- an https:// fetch never follows a redirect to plain http://;
- the whole fetch, each attempt's body included, is bounded in time (``--deadline-seconds``): a server that
  sends a byte now and then cannot hold the Pod for good;
- connection failures, timeouts, 408, 429 and 5xx are tried again (``--attempts``, doubling back-off); any
  other answer (404, 403, ...), a size over the cap and a SHA-256 mismatch are final;
- progress goes to the log every few seconds (bytes, percent when the size is known, rate);
- on failure the reason, in one line, goes to the container's termination message (``--termination-log``,
  Kubernetes' ``/dev/termination-log``) and the exit status is 1: the Pod's status carries it, and the
  operator reports which model could not be fetched and why.

Credentials never reach the log: a URI is shown without its user info and query string (a presigned URL's
signature is in its query).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from model_server import logs

log = structlog.get_logger("model_server.fetch")

REMOTE_SCHEMES = ("http", "https")
RETRIED_STATUS = frozenset({408, 429})
TERMINATION_LOG = Path("/dev/termination-log")
"""Where Kubernetes reads a container's termination message (its terminationMessagePath by default)."""
CHUNK_BYTES = 1 << 20


class FetchError(Exception):
    """The model could not be fetched; the message says why, in one line."""


class _Retryable(FetchError):
    """A failure that another attempt may not meet (the network, the server's load)."""


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20 * 2**30
    """The largest model accepted (20 GiB by default)."""
    attempts: int = 5
    """Tries in all, for failures that may pass (connection, timeout, 408, 429, 5xx)."""
    backoff_seconds: float = 1.0
    """The wait before the second try; it doubles each time, up to 30 s."""
    timeout_seconds: float = 30.0
    """Longest wait for a connection, or for the next bytes of the body."""
    deadline_seconds: float = 4 * 3600.0
    """Longest time for the whole fetch, every attempt and back-off included."""
    progress_every_seconds: float = 10.0


def shown(uri: str) -> str:
    """``uri`` as it may be logged: no user info, no query string, no fragment."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:  # an address that cannot be parsed (a bad port, a broken IPv6 literal): nothing of it
        return "(an unparsable URI)"
    if port:
        host = f"{host}:{port}"
    return _one_line(urlunsplit((parts.scheme, host, parts.path, "", "")), fill="?")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    uri: str,
    dest: Path,
    *,
    sha256: str | None = None,
    policy: FetchPolicy = FetchPolicy(),
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Fetches ``uri`` to ``dest`` (see the module's docstring); returns ``dest``. Raises FetchError."""
    if urlsplit(uri).scheme not in REMOTE_SCHEMES:
        raise FetchError(f"{shown(uri)}: only http:// and https:// models are fetched")
    if sha256 and dest.is_file() and sha256_of(dest) == sha256:
        log.info("model already fetched", uri=shown(uri), path=str(dest), bytes=dest.stat().st_size)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    delay = policy.backoff_seconds
    deadline = time.monotonic() + policy.deadline_seconds
    for attempt in range(1, policy.attempts + 1):
        try:
            _download(uri, dest, sha256=sha256, policy=policy, deadline=deadline)
            return dest
        except _Retryable as error:
            if attempt == policy.attempts or time.monotonic() + delay > deadline:
                raise FetchError(f"{error} (gave up after {attempt} attempts)") from None
            log.warning("model fetch failed; trying again", uri=shown(uri), attempt=attempt, error=str(error))
            sleep(delay)
            delay = min(delay * 2, 30.0)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _download(uri: str, dest: Path, *, sha256: str | None, policy: FetchPolicy, deadline: float) -> None:
    partial = dest.with_name(dest.name + ".part")
    name = shown(uri)
    begun = time.monotonic()
    try:
        actual, received = _receive(uri, name, partial, policy=policy, deadline=deadline)
        if sha256 and actual != sha256:
            raise FetchError(f"{name} has sha256 {actual}, expected {sha256}")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)  # what a failed attempt left (nothing once renamed into place)
    seconds = time.monotonic() - begun
    log.info("model fetched", uri=name, path=str(dest), bytes=received, seconds=round(seconds, 2), sha256=actual)


def _receive(uri: str, name: str, partial: Path, *, policy: FetchPolicy, deadline: float) -> tuple[str, int]:
    """Streams the body of ``uri`` to ``partial``; returns its SHA-256 and size. Every failure is a FetchError
    (_Retryable where another attempt may not meet it), said in one line: never a traceback."""
    begun = last_report = time.monotonic()
    try:
        with (
            httpx.Client(
                timeout=policy.timeout_seconds, follow_redirects=True, headers={"Accept-Encoding": "identity"}
            ) as client,
            client.stream("GET", uri) as response,
        ):
            _check_status(name, response)
            _check_framing(name, uri, response)
            total = _declared_size(name, response, policy.max_bytes)
            log.info("fetching model", uri=name, bytes=total)
            digest, received = hashlib.sha256(), 0
            with partial.open("wb") as file:
                for chunk in response.iter_raw():  # as it arrives (a fixed size would wait for a trickle)
                    received += len(chunk)
                    if received > policy.max_bytes:
                        raise FetchError(f"{name} is larger than the limit of {policy.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError(
                            f"{name}: not fetched within {policy.deadline_seconds:.0f}s ({received} bytes so far)"
                        )
                    digest.update(chunk)
                    file.write(chunk)
                    now = time.monotonic()
                    if now - last_report >= policy.progress_every_seconds:
                        last_report = now
                        _progress(name, received, total, now - begun)
            if total is not None and received != total:
                raise _Retryable(f"{name}: the connection ended after {received} of {total} bytes")
    except httpx.UnsupportedProtocol as error:  # a redirect to file:// or the like: no other attempt helps
        raise FetchError(f"{name}: {_one_line(str(error))}") from None
    except httpx.TransportError as error:
        raise _Retryable(f"{name}: {type(error).__name__}: {_one_line(str(error)) or 'no answer'}") from None
    except (httpx.HTTPError, httpx.InvalidURL, ValueError, OSError) as error:
        # too many redirects, a body that cannot be decoded, an address httpx refuses, a full disk: final
        raise FetchError(f"{name}: {type(error).__name__}: {_one_line(str(error))}") from None
    return digest.hexdigest(), received


def _check_status(name: str, response: httpx.Response) -> None:
    code = response.status_code
    if code < 300:
        return
    failure = f"{name}: HTTP {code} {_one_line(response.reason_phrase)[:80]}".rstrip()
    if code in RETRIED_STATUS or code >= 500:
        raise _Retryable(failure)
    raise FetchError(failure)


def _check_framing(name: str, uri: str, response: httpx.Response) -> None:
    """Refuse what could make a wrong file look right: a compressed body (its decoded size is no bound on
    memory, and its bytes are not the file's), a body with neither a length nor chunked framing (a connection
    cut early would look like the end of the file) and a redirect from https to plain http."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError(f"{name}: the server sent the file with Content-Encoding {_one_line(encoding)[:40]}")
    chunked = "chunked" in response.headers.get("transfer-encoding", "").lower()
    if "content-length" not in response.headers and not chunked:
        raise FetchError(f"{name}: the server sent no Content-Length: a cut connection could not be detected")
    if urlsplit(uri).scheme == "https" and response.url.scheme != "https":
        raise FetchError(f"{name}: redirected from https to {response.url.scheme}://, which is not followed")


def _one_line(text: str, fill: str = " ") -> str:
    """``text`` on one line of printable characters, ``fill`` for the others (a server's words and a URL go
    into the Pod's status)."""
    return "".join(c if c.isprintable() else fill for c in text).strip()


def _declared_size(name: str, response: httpx.Response, limit: int) -> int | None:
    header = response.headers.get("content-length")
    if header is None or not header.isdigit():
        return None
    size = int(header)
    if size > limit:
        raise FetchError(f"{name} is {size} bytes, over the limit of {limit} bytes")
    return size


def _progress(name: str, received: int, total: int | None, seconds: float) -> None:
    percent = round(100 * received / total, 1) if total else None
    rate = round(received / max(seconds, 1e-9) / 2**20, 2)
    log.info("fetching model", uri=name, received=received, bytes=total, percent=percent, mib_per_s=rate)


def write_termination_message(path: Path, message: str) -> None:
    """Kubernetes shows this file's text as the container's termination message; nothing is written where
    there is no such file to write (a process run by hand)."""
    if path.exists() and os.access(path, os.W_OK):
        path.write_text(message[-4096:])  # the reason is at the end; the operator keeps the end too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_server.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("uri")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--sha256")
    parser.add_argument("--max-bytes", type=int, default=FetchPolicy.max_bytes)
    parser.add_argument("--attempts", type=int, default=FetchPolicy.attempts)
    parser.add_argument("--deadline-seconds", type=float, default=FetchPolicy.deadline_seconds)
    parser.add_argument(
        "--termination-log", type=Path, default=Path(os.environ.get("MODELSERVER_TERMINATION_LOG", TERMINATION_LOG))
    )
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    args = parser.parse_args(argv)
    logs.configure(args.log_format)
    policy = FetchPolicy(
        max_bytes=args.max_bytes, attempts=max(1, args.attempts), deadline_seconds=args.deadline_seconds
    )
    try:
        fetch(args.uri, args.dest, sha256=args.sha256, policy=policy)
    except FetchError as error:
        log.error("model not fetched", error=str(error))
        write_termination_message(args.termination_log, f"model not fetched: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
