"""Tell the live agent in a room what was said in an uploaded recording.

A reliable data packet on topic ``gocare`` sent through the LiveKit server API (``RoomService.SendData``):
the worker turns ``{"type": "voice_upload", "transcript": ..., "reply": ...}`` into conversation items, so
the agent knows about the message if the user calls in afterwards.

Best effort by design: the upload already produced what the user asked for, so an unreachable or slow
LiveKit server costs at most ``settings.notify_timeout`` and yields ``False``, never a failed upload.
"""

from __future__ import annotations

import asyncio
import logging

from gocare_voice import protocol
from gocare_voice.settings import Settings

log = logging.getLogger("gocare.voice_upload")


async def notify_room(*, settings: Settings, room: str, transcript: str, reply: str | None) -> bool:
    """True only when the LiveKit server accepted the packet; False (logged) on any failure or timeout."""
    if not settings.livekit_configured:
        return False
    from livekit import api

    request = api.SendDataRequest(
        room=room,
        data=protocol.encode(protocol.voice_upload_packet(transcript=transcript, reply=reply)),
        kind=api.DataPacket.Kind.RELIABLE,
        topic=protocol.TOPIC,
    )
    lkapi: api.LiveKitAPI | None = None
    try:
        lkapi = api.LiveKitAPI(
            url=settings.livekit_http_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret.get_secret_value(),
        )
        await asyncio.wait_for(lkapi.room.send_data(request), settings.notify_timeout)
        return True
    except asyncio.TimeoutError:
        log.warning("voice upload: LiveKit did not accept the notification for room %r within %.1f s",
                    room, settings.notify_timeout)
        return False
    except Exception as error:  # noqa: BLE001 - any failure means "not notified", never a failed upload
        # the error's type and the scrubbed words: LiveKit's error text may quote the request
        from gocare_voice.redact import scrub_provider_text

        log.warning("voice upload: could not notify room %r: %s: %s", room, type(error).__name__,
                    scrub_provider_text(str(error))[:200])
        return False
    finally:
        try:
            if lkapi is not None:
                await asyncio.wait_for(lkapi.aclose(), 1.0)
        except Exception:  # noqa: BLE001 - closing a dead connection must not fail the upload
            pass
