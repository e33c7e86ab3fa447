"""One settings object for every part of gocare-voice.

Read once (``load_settings``) at the edge of the program and passed down explicitly: nothing reads the
environment at import time. Variable names of the original deployment are kept (``LIVEKIT_URL``,
``LLM_API_KEY``, ...) so existing ``.env`` files work; new ones carry the ``GOCARE_`` prefix.
"""

from __future__ import annotations

import ipaddress
import re
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
DEFAULT_LIVEKIT_URL = "ws://localhost:7880"
GROQ_BASE_URL = "https://api.groq.com/openai/v1"

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class Environment(str, Enum):
    development = "development"
    production = "production"


class AuthMode(str, Enum):
    none = "none"
    jwt = "jwt"


class TTSProvider(str, Enum):
    openai = "openai"
    deepgram = "deepgram"
    azure = "azure"


class SettingsError(Exception):
    """Invalid configuration; ``problems`` holds one human line per problem, each naming the variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(value: Any) -> float:
    """Seconds from ``900``, ``"900"``, ``"15m"``, ``"1.5h"``, ``"250ms"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use seconds, or a number with ms/s/m/h)")
        seconds = float(match.group(1)) * _DURATION_UNIT[(match.group(2) or "").lower() or None]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def parse_rate_limit(value: str) -> tuple[int, float] | None:
    """``"30/minute"`` -> (30, 60.0); ``"off"``/``""``/``"0"`` -> None (no limit)."""
    text = (value or "").strip().lower()
    if text in ("", "off", "none", "0", "false", "disabled"):
        return None
    match = _RATE_RE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"not a rate: {value!r} (use e.g. 30/minute, 5/second, or off)")
    return int(match.group(1)), float(_PERIOD_SECONDS[match.group(2).lower()])


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]").lower()
    if host in ("localhost",) or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env(name: str) -> Any:
    return Field(validation_alias=AliasChoices(name))


class Settings(BaseSettings):
    """Every setting of gocare-voice; see docs/configuration.md and .env.example."""

    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
        frozen=True,
    )

    # --- deployment -------------------------------------------------------------------------------
    env: Environment = Field(Environment.development, validation_alias=AliasChoices("GOCARE_ENV", "env"))
    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))

    # --- LiveKit ----------------------------------------------------------------------------------
    livekit_url: str = Field(DEFAULT_LIVEKIT_URL, validation_alias=AliasChoices("LIVEKIT_URL", "livekit_url"))
    livekit_api_key: str = Field(DEV_API_KEY, validation_alias=AliasChoices("LIVEKIT_API_KEY", "livekit_api_key"))
    livekit_api_secret: SecretStr = Field(
        SecretStr(DEV_API_SECRET), validation_alias=AliasChoices("LIVEKIT_API_SECRET", "livekit_api_secret")
    )
    agent_name: str = Field("multi-assistant", validation_alias=AliasChoices("GOCARE_AGENT_NAME", "agent_name"))
    livekit_connect_retries: int = Field(
        3, ge=0, le=100, validation_alias=AliasChoices("GOCARE_LIVEKIT_CONNECT_RETRIES", "livekit_connect_retries")
    )

    # --- token service ----------------------------------------------------------------------------
    port: int = Field(8080, ge=1, le=65535, validation_alias=AliasChoices("PORT", "port"))
    allowed_origins: str = Field("", validation_alias=AliasChoices("ALLOWED_ORIGINS", "allowed_origins"))
    token_ttl: float = Field(900.0, validation_alias=AliasChoices("GOCARE_TOKEN_TTL", "token_ttl"))
    auth_mode: AuthMode = Field(AuthMode.none, validation_alias=AliasChoices("GOCARE_AUTH_MODE", "auth_mode"))
    auth_jwt_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GOCARE_AUTH_JWT_SECRET", "auth_jwt_secret")
    )
    auth_jwks_url: str | None = Field(None, validation_alias=AliasChoices("GOCARE_AUTH_JWKS_URL", "auth_jwks_url"))
    auth_audience: str | None = Field(None, validation_alias=AliasChoices("GOCARE_AUTH_AUDIENCE", "auth_audience"))
    auth_issuer: str | None = Field(None, validation_alias=AliasChoices("GOCARE_AUTH_ISSUER", "auth_issuer"))
    auth_name_claim: str = Field("name", validation_alias=AliasChoices("GOCARE_AUTH_NAME_CLAIM", "auth_name_claim"))
    rate_limit: str = Field("60/minute", validation_alias=AliasChoices("GOCARE_RATE_LIMIT", "rate_limit"))
    max_body_bytes: int = Field(
        16 * 1024, ge=256, le=1024 * 1024, validation_alias=AliasChoices("GOCARE_MAX_BODY_BYTES", "max_body_bytes")
    )

    # --- providers --------------------------------------------------------------------------------
    llm_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("LLM_API_KEY", "llm_api_key"))
    llm_base_url: str | None = Field(None, validation_alias=AliasChoices("LLM_BASE_URL", "llm_base_url"))
    llm_model_name: str = Field("gpt-4o-mini", validation_alias=AliasChoices("LLM_MODEL_NAME", "llm_model_name"))
    groq_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("GROQ_API_KEY", "groq_api_key"))
    deepgram_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DEEPGRAM_API_KEY", "deepgram_api_key")
    )
    deepgram_base_url: str | None = Field(
        None, validation_alias=AliasChoices("GOCARE_DEEPGRAM_BASE_URL", "deepgram_base_url")
    )
    stt_model: str = Field("nova-3", validation_alias=AliasChoices("GOCARE_STT_MODEL", "stt_model"))
    stt_language: str = Field("en-US", validation_alias=AliasChoices("GOCARE_STT_LANGUAGE", "stt_language"))
    tts_provider: TTSProvider = Field(
        TTSProvider.openai, validation_alias=AliasChoices("GOCARE_TTS_PROVIDER", "tts_provider")
    )
    tts_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("GOCARE_TTS_API_KEY", "tts_api_key"))
    tts_base_url: str | None = Field(None, validation_alias=AliasChoices("GOCARE_TTS_BASE_URL", "tts_base_url"))
    tts_model: str = Field("gpt-4o-mini-tts", validation_alias=AliasChoices("GOCARE_TTS_MODEL", "tts_model"))
    tts_voice: str = Field("alloy", validation_alias=AliasChoices("GOCARE_TTS_VOICE", "tts_voice"))
    azure_speech_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("AZURE_SPEECH_KEY", "azure_speech_key")
    )
    azure_speech_region: str | None = Field(
        None, validation_alias=AliasChoices("AZURE_SPEECH_REGION", "azure_speech_region")
    )

    # --- conversation -----------------------------------------------------------------------------
    phone_region: str = Field("IN", validation_alias=AliasChoices("GOCARE_PHONE_REGION", "phone_region"))
    max_auth_attempts: int = Field(
        3, ge=1, le=10, validation_alias=AliasChoices("GOCARE_MAX_AUTH_ATTEMPTS", "max_auth_attempts")
    )
    database_url: str = Field(
        "sqlite:///gocare-users.db", validation_alias=AliasChoices("GOCARE_DATABASE_URL", "database_url")
    )

    # --- voice upload -----------------------------------------------------------------------------
    upload_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, validation_alias=AliasChoices("GOCARE_UPLOAD_MAX_BYTES", "upload_max_bytes")
    )
    upload_max_seconds: float = Field(
        300.0, gt=0, validation_alias=AliasChoices("GOCARE_UPLOAD_MAX_SECONDS", "upload_max_seconds")
    )
    stage_timeout: float = Field(
        30.0, gt=0, validation_alias=AliasChoices("GOCARE_STAGE_TIMEOUT", "stage_timeout")
    )
    notify_timeout: float = Field(
        3.0, gt=0, validation_alias=AliasChoices("GOCARE_NOTIFY_TIMEOUT", "notify_timeout")
    )

    # --- validators -------------------------------------------------------------------------------
    @field_validator("token_ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds < 60 or seconds > 24 * 3600:
            raise ValueError("must be between 60 seconds and 24 hours")
        return seconds

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("livekit_url")
    @classmethod
    def _lk_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
            raise ValueError("must be a ws://, wss://, http:// or https:// URL with a host")
        return value.strip()

    @field_validator("agent_name")
    @classmethod
    def _agent_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError("use 1-64 letters, digits, '-', '_' or '.'")
        return value

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers

        region = value.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region code phonenumbers knows (e.g. IN, US, GB)")
        return region

    @field_validator(
        "llm_api_key", "groq_api_key", "deepgram_api_key", "tts_api_key", "azure_speech_key", "auth_jwt_secret",
        mode="before",
    )
    @classmethod
    def _blank_secret_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "llm_base_url", "deepgram_base_url", "tts_base_url", "auth_jwks_url", "auth_audience", "auth_issuer",
        "azure_speech_region", mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _deployment_rules(self) -> Settings:
        problems: list[str] = []
        dev_creds = self.livekit_api_key == DEV_API_KEY or self.livekit_api_secret.get_secret_value() == DEV_API_SECRET
        if dev_creds and self.env is Environment.production:
            problems.append(
                "LIVEKIT_API_KEY/LIVEKIT_API_SECRET: the development credentials (devkey/secret) are refused "
                "when GOCARE_ENV=production"
            )
        elif dev_creds and not is_loopback_url(self.livekit_url):
            problems.append(
                "LIVEKIT_API_KEY/LIVEKIT_API_SECRET: the development credentials (devkey/secret) are refused "
                f"for a non-local LIVEKIT_URL ({urlsplit(self.livekit_url).hostname}); set your project's key and secret"
            )
        if self.env is Environment.production and self.auth_mode is AuthMode.none:
            problems.append("GOCARE_AUTH_MODE: 'none' (no caller authentication) is refused when GOCARE_ENV=production")
        if self.auth_mode is AuthMode.jwt and not (self.auth_jwt_secret or self.auth_jwks_url):
            problems.append("GOCARE_AUTH_MODE: 'jwt' needs GOCARE_AUTH_JWT_SECRET or GOCARE_AUTH_JWKS_URL")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # --- derived values (what is configured for the providers: check.configuration_facts) -------
    @property
    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def rate(self) -> tuple[int, float] | None:
        return parse_rate_limit(self.rate_limit)

    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret.get_secret_value())

    @property
    def livekit_http_url(self) -> str:
        """The server API speaks HTTP(S) on the same host and port as the WebSocket URL."""
        url = self.livekit_url
        if url.startswith("ws://"):
            return "http://" + url[5:]
        if url.startswith("wss://"):
            return "https://" + url[6:]
        return url

    @property
    def groq_configured(self) -> bool:
        return self.groq_api_key is not None


def _field_env_name(loc: tuple[Any, ...]) -> str:
    if not loc:
        return "settings"
    field = Settings.model_fields.get(str(loc[0]))
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    return str(loc[0])


def _problems(error: ValidationError) -> list[str]:
    lines: list[str] = []
    for item in error.errors():
        message = str(item.get("msg", "invalid"))
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if not item.get("loc"):
            lines.extend(message.splitlines())
        else:
            lines.append(f"{_field_env_name(item['loc'])}: {message}")
    return lines


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read the environment (and ``env_file`` when it exists) once; raise ``SettingsError`` with one line
    per problem, each naming the variable, instead of pydantic's multi-line dump."""
    kwargs: dict[str, Any] = dict(overrides)
    if env_file is not None and Path(env_file).is_file():
        kwargs["_env_file"] = str(env_file)
    try:
        return Settings(**kwargs)
    except ValidationError as error:
        raise SettingsError(_problems(error)) from None
