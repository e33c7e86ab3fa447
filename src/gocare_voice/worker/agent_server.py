"""``GoCareAgentServer``: livekit-agents' ``AgentServer`` that remembers why it stopped.

``gocare worker start`` must exit 1 when the worker lost LiveKit for good (``GOCARE_LIVEKIT_CONNECT_RETRIES``
spent), but livekit-agents' CLI (``cli.run_app``) logs the failure of ``AgentServer.run()`` and returns
normally. ``run()`` is public and raises that failure, so this subclass keeps it for the CLI to read after
``run_app`` returns, and does not raise it on: livekit-agents' CLI would log it with a traceback ("worker
failed"), and its console, whose worker thread dies of it, would wait for a session forever instead of
ending; returning lets both shut down, and ``gocare worker`` prints one line and exits 1. Imported only
inside the commands that start a worker (it imports livekit.agents).
"""

from __future__ import annotations

from typing import Any

from livekit.agents import AgentServer


class GoCareAgentServer(AgentServer):
    run_error: BaseException | None = None
    """What ended ``run()`` with an exception (livekit-agents raises ``RuntimeError("failed to connect to
    livekit after N attempts")`` when its connection retries are spent), or None."""

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - kept for the CLI, which exits 1 with one line (above)
            self.run_error = error

    @property
    def connection_failed(self) -> bool:
        return isinstance(self.run_error, RuntimeError) and "failed to connect" in str(self.run_error)
