"""The configuration facts ``gocare check`` prints (the same ones ``/health`` reports). The LiveKit
reachability check of ``gocare check --livekit`` is the worker's own pre-flight (``worker.preflight``)."""

from __future__ import annotations

from dataclasses import dataclass

from gocare_voice.providers import STT_PROVIDERS, TTS_PROVIDERS, provider_facts
from gocare_voice.settings import AuthMode, Settings


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
    return {"livekit_configured": settings.livekit_configured, **provider_facts(settings)}


def configuration_rows(settings: Settings) -> list[ConfigRow]:
    facts = configuration_facts(settings)
    stt = STT_PROVIDERS[settings.stt_provider]
    tts = TTS_PROVIDERS[settings.tts_provider]
    return [
        ConfigRow("LiveKit server", facts["livekit_configured"], True, "token-server, worker",
                  f"LIVEKIT_URL ({settings.livekit_url}), LIVEKIT_API_KEY, LIVEKIT_API_SECRET"),
        ConfigRow("LLM", facts["llm_configured"], True, "worker, voice upload",
                  "LLM_API_KEY (+ LLM_BASE_URL, LLM_MODEL_NAME) or GROQ_API_KEY"),
        ConfigRow("Groq", facts["groq_configured"], False, "worker, voice upload", "GROQ_API_KEY"),
        ConfigRow(f"Speech-to-text ({stt.label})", facts["stt_configured"], True, "worker, voice upload",
                  stt.hint),
        ConfigRow(f"Text-to-speech ({tts.label})", facts["tts_configured"], True, "worker, voice upload",
                  tts.hint),
        ConfigRow("Azure text-to-speech", facts["azure_tts_configured"], False, "worker, voice upload (optional)",
                  "AZURE_SPEECH_KEY, AZURE_SPEECH_REGION, pip install 'gocare-voice[azure]'"),
        ConfigRow("Caller authentication", settings.auth_mode is AuthMode.jwt, False, "token-server",
                  "GOCARE_AUTH_MODE=jwt with GOCARE_AUTH_JWT_SECRET or GOCARE_AUTH_JWKS_URL"),
        ConfigRow("User directory", True, False, "worker, gocare users",
                  f"GOCARE_DATABASE_URL ({database_location(settings.database_url)})"),
    ]


def database_location(url: str) -> str:
    """Where the directory lives, as a user can find it: a relative SQLite path resolved against the
    working directory (that is what SQLite does, so the worker and ``gocare users`` must agree on it);
    other URLs without their password."""
    from pathlib import Path

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "not a database URL"
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return "in memory"
        return str(Path(database).expanduser().resolve())
    return parsed.render_as_string(hide_password=True)
