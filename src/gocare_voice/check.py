"""The configuration facts ``gocare check`` prints (the same ones ``/health`` reports). The LiveKit
reachability check of ``gocare check --livekit`` is the worker's own pre-flight (``worker.preflight``)."""

from __future__ import annotations

from dataclasses import dataclass

from gocare_voice.conversation.providers import (
    azure_plugin_available,
    missing_llm_settings,
    missing_stt_settings,
    missing_tts_settings,
)
from gocare_voice.settings import AuthMode, Settings, TTSProvider


@dataclass(frozen=True, slots=True)
class ConfigRow:
    what: str
    ok: bool
    required: bool
    needed_by: str
    hint: str


def configuration_facts(settings: Settings) -> dict[str, bool]:
    """What ``/health`` reports: true only when the provider could really be built from these settings
    (the same checks the worker makes before it starts)."""
    return {
        "livekit_configured": settings.livekit_configured,
        "llm_configured": not missing_llm_settings(settings),
        "deepgram_configured": not missing_stt_settings(settings),
        "groq_configured": settings.groq_configured,
        "azure_tts_configured": settings.azure_speech_key is not None and bool(settings.azure_speech_region)
        and azure_plugin_available(),
        "tts_configured": not missing_tts_settings(settings),
    }


def configuration_rows(settings: Settings) -> list[ConfigRow]:
    facts = configuration_facts(settings)
    tts_hint = {
        TTSProvider.openai: "GOCARE_TTS_API_KEY or LLM_API_KEY (OpenAI-compatible speech)",
        TTSProvider.deepgram: "DEEPGRAM_API_KEY (GOCARE_TTS_PROVIDER=deepgram)",
        TTSProvider.azure: "AZURE_SPEECH_KEY and AZURE_SPEECH_REGION (GOCARE_TTS_PROVIDER=azure)",
    }[settings.tts_provider]
    return [
        ConfigRow("LiveKit server", facts["livekit_configured"], True, "token-server, worker",
                  f"LIVEKIT_URL ({settings.livekit_url}), LIVEKIT_API_KEY, LIVEKIT_API_SECRET"),
        ConfigRow("LLM", facts["llm_configured"], True, "worker, voice upload",
                  "LLM_API_KEY (+ LLM_BASE_URL, LLM_MODEL_NAME) or GROQ_API_KEY"),
        ConfigRow("Groq", facts["groq_configured"], False, "worker, voice upload", "GROQ_API_KEY"),
        ConfigRow("Speech-to-text (Deepgram)", facts["deepgram_configured"], True, "worker, voice upload",
                  "DEEPGRAM_API_KEY"),
        ConfigRow(f"Text-to-speech ({settings.tts_provider.value})", facts["tts_configured"], True,
                  "worker, voice upload", tts_hint),
        ConfigRow("Azure speech", facts["azure_tts_configured"], False, "voice upload (optional)",
                  "AZURE_SPEECH_KEY, AZURE_SPEECH_REGION, pip install livekit-plugins-azure"),
        ConfigRow("Caller authentication", settings.auth_mode is AuthMode.jwt, False, "token-server",
                  "GOCARE_AUTH_MODE=jwt with GOCARE_AUTH_JWT_SECRET or GOCARE_AUTH_JWKS_URL"),
    ]
