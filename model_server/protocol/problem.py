"""An error answer, raised anywhere below the REST handlers and written once, in the shape of the endpoint's
protocol (OIP v2's ``{"error": message}``, OpenAI's ``{"error": {"message", "type", "code"}}``)."""

from __future__ import annotations


class Problem(Exception):
    """HTTP status and a message for the client; ``code`` and ``param`` (the request field at fault) when a
    protocol can say more than the status."""

    def __init__(
        self, status: int, message: str, *, timed_out: bool = False, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.timed_out = timed_out
        self.code = code
        self.param = param
