"""Azure text-to-speech through livekit's azure plugin (the ``azure`` extra), with two corrections.

- The plugin puts the text into its SSML document as is: an LLM reply with ``&`` or ``<`` ("Tom & Jerry")
  makes Azure answer 400 and the agent falls silent. The text is XML-escaped here.
- Every value is passed explicitly: the plugin would otherwise read ``AZURE_SPEECH_ENDPOINT`` and friends
  from the environment (we read settings once, ``settings.py``).

Imported only when Azure is configured: ``livekit.plugins.azure`` pulls in the Azure Speech SDK.
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape


def build_azure_tts(
    *, key: str, region: str, endpoint: str | None, voice: str, language: str | None, http_session: Any = None
) -> Any:
    from livekit.plugins import azure  # type: ignore[attr-defined]

    class EscapedAzureTTS(azure.TTS):  # type: ignore[misc,name-defined]
        def synthesize(self, text: str, **kwargs: Any) -> Any:
            return super().synthesize(escape(text), **kwargs)

    # the full URL always: given none, the plugin would look for AZURE_SPEECH_ENDPOINT in the environment
    url = endpoint or f"https://{region}.tts.speech.microsoft.com/cognitiveservices/v1"
    return EscapedAzureTTS(
        speech_key=key, speech_region=region, speech_endpoint=url, voice=voice,
        language=language or None, http_session=http_session,
    )
