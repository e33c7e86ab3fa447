"""Can the worker reach LiveKit with these credentials? Answered before livekit-agents starts.

livekit-agents retries its WebSocket for minutes and then exits 0, which a supervisor reads as success.
One server-API call (``ListRooms``, which needs a valid key and secret) tells "unreachable" from
"credentials refused" in a second or two, so ``gocare worker start`` can exit non-zero with one line.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from gocare_voice.settings import Settings

DEFAULT_ATTEMPT_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class PreflightResult:
    ok: bool
    problem: str | None = None
    kind: str | None = None  # "unreachable" | "refused" | "error"
    attempts: int = 0


def quiet_short_key_warning() -> None:
    """livekit-api signs with PyJWT, which warns on every token about the 6-byte development secret; that
    warning is not news to a developer on ``livekit-server --dev`` and breaks our one-line errors."""
    import warnings

    warnings.filterwarnings("ignore", message="The HMAC key is", category=UserWarning)


def _where(settings: Settings) -> str:
    parts = urlsplit(settings.livekit_url)
    return f"{parts.scheme}://{parts.netloc}"


async def check_livekit(
    settings: Settings, *, attempts: int | None = None, attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
    retry_delay: float = 0.5,
) -> PreflightResult:
    """List rooms once per attempt; ``1 + GOCARE_LIVEKIT_CONNECT_RETRIES`` attempts by default.

    Refused credentials are not retried (they will not get better); network failures are.
    """
    import aiohttp
    from livekit import api

    quiet_short_key_warning()
    total = max(1, attempts if attempts is not None else 1 + settings.livekit_connect_retries)
    where = _where(settings)
    last = ""
    for attempt in range(1, total + 1):
        try:
            async with api.LiveKitAPI(
                settings.livekit_http_url,
                settings.livekit_api_key,
                settings.livekit_api_secret.get_secret_value(),
                timeout=aiohttp.ClientTimeout(total=attempt_timeout),
                failover=False,
            ) as lk:
                # livekit-api 1.2 passes ``timeout=None`` per request, which disables the session timeout:
                # without this bound a server that accepts and never answers hangs the call forever
                await asyncio.wait_for(lk.room.list_rooms(api.ListRoomsRequest()), timeout=attempt_timeout)
            return PreflightResult(ok=True, attempts=attempt)
        except api.TwirpError as error:
            status = getattr(error, "status", 0) or 0
            code = getattr(error, "code", "") or ""
            if status in (401, 403) or code in ("unauthenticated", "permission_denied"):
                return PreflightResult(
                    ok=False, kind="refused", attempts=attempt,
                    problem=f"LiveKit at {where} refused the credentials (LIVEKIT_API_KEY/LIVEKIT_API_SECRET): {code or status}",
                )
            last = f"LiveKit at {where} answered {status} {code}".strip()
            if status and status < 500:
                return PreflightResult(ok=False, kind="error", attempts=attempt, problem=last)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            if isinstance(error, asyncio.TimeoutError):
                reason = f"no answer within {attempt_timeout:g}s"
            else:
                reason = str(error) or type(error).__name__
            last = f"cannot reach LiveKit at {where} (LIVEKIT_URL): {reason}"
        if attempt < total:
            await asyncio.sleep(retry_delay * attempt)
    return PreflightResult(
        ok=False, kind="unreachable", attempts=total,
        problem=f"{last} after {total} attempt{'s' if total != 1 else ''}",
    )


def port_settings(settings: Settings) -> list[tuple[str, int]]:
    """The ports a worker (``start``/``dev``/``connect``) listens on, with the setting that names each;
    0 (a free port picked at start) is left out."""
    ports = [("GOCARE_WORKER_PORT", settings.worker_port)]
    if settings.worker_metrics_port is not None:
        ports.append(("GOCARE_WORKER_METRICS_PORT", settings.worker_metrics_port))
    return [(name, port) for name, port in ports if port]


def taken_worker_port(settings: Settings) -> str | None:
    """One line when a port the worker would listen on is in use, else None. Bound the way livekit-agents'
    aiohttp server binds it (all interfaces, ``SO_REUSEADDR``), so a port in TIME_WAIT is not "taken" and a
    listening one is."""
    for name, port in port_settings(settings):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("0.0.0.0", port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    return f"the worker cannot listen on port {port} ({name}): {error.strerror}"
                return (
                    f"port {port} is already in use ({name}): another worker or `gocare worker dev` may be "
                    f"running; stop it or set {name} to a free port"
                )
    return None
