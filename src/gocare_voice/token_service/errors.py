"""One error shape for every endpoint: ``{"error": <code>, "detail": <human text>}`` with a 4xx status."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, *, headers: dict[str, str] | None = None,
                 reason: str | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.reason = reason
        """A finer, fixed word for metrics (``expired``, ``bad_signature``); never part of the response."""

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}
