"""A small HTTP/1.1 keep-alive client for the model servers: a pool of connections per upstream,
responses parsed with httptools. Lighter than a general client on the router's hot path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools


class UpstreamError(Exception):
    """The upstream could not be reached or broke the connection."""


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class _Parsed:
    head_only: bool = False
    """The answer to a HEAD request: its headers are all of it (a Content-Length describes a body not sent)."""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    keep_alive: bool = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.head_only:
            self.done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server"}


class Upstream:
    def __init__(self, url: str, *, max_idle: int = 64, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream URL must be http://host:port, got {url!r}")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self.host_header = f"{self.host}:{self.port}".encode()
        self.max_idle = max_idle
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as error:
            raise UpstreamError(f"cannot connect to {self.url}: {error}") from error

    async def request(
        self, method: bytes, target: bytes, body: bytes, content_type: bytes | None, *, authorization: bytes = b""
    ) -> Response:
        """One request (with ``authorization`` as its Authorization header when given); a stale pooled
        connection is retried once on a fresh one."""
        for attempt in (1, 2):
            reader, writer = await self._connection()
            try:
                return await asyncio.wait_for(
                    self._exchange(reader, writer, method, target, body, content_type, authorization), self.timeout
                )
            except (OSError, asyncio.IncompleteReadError, httptools.HttpParserError, UpstreamError) as error:
                writer.close()
                if attempt == 2:
                    raise UpstreamError(f"{self.url}: {type(error).__name__}: {error}") from error
            except TimeoutError as error:
                writer.close()
                raise UpstreamError(f"{self.url}: no answer within {self.timeout}s") from error
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: bytes,
        target: bytes,
        body: bytes,
        content_type: bytes | None,
        authorization: bytes,
    ) -> Response:
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (method, target, self.host_header, len(body))
        if content_type:
            head += b"Content-Type: " + content_type + b"\r\n"
        if authorization:
            head += b"Authorization: " + authorization + b"\r\n"
        writer.write(head + b"\r\n" + body)
        parsed = _Parsed(head_only=method == b"HEAD")
        parser = httptools.HttpResponseParser(parsed)
        while not parsed.done:
            data = await reader.read(65536)
            if not data:
                raise UpstreamError("connection closed before the response was complete")
            parser.feed_data(data)
        status = parser.get_status_code()
        if parser.should_keep_alive() and len(self._idle) < self.max_idle:
            self._idle.append((reader, writer))
        else:
            writer.close()
        headers = [(k, v) for k, v in parsed.headers if k.lower() not in _HOP_BY_HOP]
        return Response(status, headers, b"".join(parsed.chunks))

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
