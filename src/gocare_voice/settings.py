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

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_API_KEY = "devkey"
DEV_API_SECRET = "secret"
DEFAULT_LIVEKIT_URL = "ws://localhost:7880"
GROQ_BASE_URL = "https://api.groq.com/openai/v1"

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_PERIOD_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_DURATION_UNIT = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


_SDK_URL = re.compile(
    r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::\d{1,5})?"
    r"/[A-Za-z0-9._~/@+-]*",
    re.ASCII,
)
_SRI = re.compile(r"sha(256|384|512)-[A-Za-z0-9+/]+={0,2}", re.ASCII)


class Environment(str, Enum):
    development = "development"
    production = "production"


class AuthMode(str, Enum):
    none = "none"
    jwt = "jwt"


class JobExecutor(str, Enum):
    """Where a worker runs its calls: ``process``, one job process per call (livekit-agents' default on Linux;
    a crash or a memory blow-up ends one call), or ``thread``, every call a thread of the worker process (less
    memory per call, but a crash of one call's native code ends them all: docs/operations.md)."""

    process = "process"
    thread = "thread"


class InterruptionDetection(str, Enum):
    vad = "vad"
    adaptive = "adaptive"


class PlaygroundMode(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class STTProvider(str, Enum):
    deepgram = "deepgram"


class RateLimitFailMode(str, Enum):
    open = "open"
    closed = "closed"


class LogFormat(str, Enum):
    text = "text"
    json = "json"


class CallRecordsMode(str, Enum):
    """``GOCARE_CALL_RECORDS``: what each call leaves behind (records/model.py ``RecordLevel``)."""

    off = "off"
    metadata = "metadata"
    transcript = "transcript"


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


def parse_token_ttl(value: Any) -> float:
    """Seconds of a token's lifetime: a duration from 60 seconds to 24 hours."""
    seconds = parse_duration(value)
    if seconds < 60 or seconds > 24 * 3600:
        raise ValueError(f"{value!r} is outside 60 seconds .. 24 hours (e.g. 900, 15m, 1h)")
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


RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+cluster", "redis+sentinel")


def check_rate_limit_storage(value: str) -> str:
    """``memory://`` or a Redis URL in one of the forms the ``limits`` library reads."""
    url = (value or "").strip() or "memory://"
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in RATE_LIMIT_STORAGE_SCHEMES:
        raise ValueError(
            f"not a rate-limit storage: use memory:// or a Redis URL ({', '.join(s + '://' for s in RATE_LIMIT_STORAGE_SCHEMES[1:])})"
        )
    return url


def parse_trusted_proxies(value: str) -> list[str]:
    """``"10.0.0.1, 10.1.0.0/16"`` -> the entries, each an IP address or network (``*``: every peer)."""
    entries: list[str] = []
    for entry in (part.strip() for part in (value or "").split(",")):
        if not entry or entry == "*":
            entries.extend([entry] if entry else [])
            continue
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8)") from None
        # uvicorn reads networks strictly ("10.0.0.1/8" is an error there): hand it the network itself
        entries.append(entry if "/" not in entry else str(network))
    return entries


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").strip("[]").lower()


_LIVEKIT_URL = re.compile(
    r"(?P<scheme>wss?|https?)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
    r"(?::(?P<port>\d{1,5}))?(?P<path>/[A-Za-z0-9._~/-]*)?",
    re.ASCII,
)
"""What LIVEKIT_URL may look like: one reading only. WHATWG URL parsing (the SDKs') treats ``\\`` as ``/``
in special schemes, Python's ``urlsplit`` does not; user info, percent-escapes and non-ASCII hosts are read
differently too. A URL outside this shape is refused instead of guessed."""


def is_loopback_url(url: str) -> bool:
    host = _host(url)
    if host in ("localhost",) or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Where a phone or an emulator finds a developer's machine: the LAN (RFC 1918, IPv6 unique local), the
# Android emulator's alias of the host (10.0.2.2, inside 10/8), link-local addresses and mDNS ``.local``
# names. Listed explicitly: ``ipaddress.is_private`` also covers documentation and benchmark ranges.
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7", "fe80::/10")
)


def is_private_network_url(url: str) -> bool:
    """True for an address only reachable from a private network (not loopback: see ``is_loopback_url``)."""
    host = _host(url)
    if host.endswith(".local"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _PRIVATE_NETWORKS)



def _webhook_url_problems(name: str, url: str, *, production: bool) -> list[str]:
    """A signed webhook's address (the end-of-call one, the alerts'): http(s), no user info, https in production."""
    if not re.fullmatch(r"https?://[^\s/?#@]+(?:/[^\s#]*)?", url):
        return [f"{name}: must be an http:// or https:// URL without user info"]
    if production and not url.lower().startswith("https://"):
        return [f"{name}: must be an https:// URL when GOCARE_ENV=production"]
    return []

class Settings(BaseSettings):
    """Every setting of gocare-voice; see docs/configuration.md and .env.example."""

    model_config = SettingsConfigDict(
        env_file=None,
        extra="ignore",
        case_sensitive=False,
        frozen=True,
    )

    def __init__(self, **values: Any) -> None:
        """Keyword arguments by field name (``Settings(rate_limit="off")``) map to the variable names. Not
        ``populate_by_name``: with it pydantic-settings would also read bare ``ENV``, ``DATABASE_URL``,
        ``RATE_LIMIT`` ... from the environment, which platforms set for their own purposes."""
        fields = type(self).model_fields
        mapped: dict[str, Any] = {}
        for key, value in values.items():
            field = fields.get(key)
            alias = field.validation_alias if field is not None else None
            mapped[alias if isinstance(alias, str) else key] = value
        super().__init__(**mapped)

    # --- deployment -------------------------------------------------------------------------------
    env: Environment = Field(Environment.development, validation_alias="GOCARE_ENV")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: LogFormat = Field(LogFormat.text, validation_alias="GOCARE_LOG_FORMAT")
    """``json``: one JSON object per line (level, logger, message, time, and room/participant/job fields)."""

    # --- LiveKit ----------------------------------------------------------------------------------
    livekit_url: str = Field(DEFAULT_LIVEKIT_URL, validation_alias="LIVEKIT_URL")
    livekit_client_url: str | None = Field(None, validation_alias="GOCARE_LIVEKIT_CLIENT_URL")
    """The URL handed to apps in token responses, when it differs from the one the server side uses
    (a phone reaching a development server over the LAN, a public URL in front of an internal one)."""
    livekit_api_key: str = Field(DEV_API_KEY, validation_alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(
        SecretStr(DEV_API_SECRET), validation_alias="LIVEKIT_API_SECRET"
    )
    agent_name: str = Field("multi-assistant", validation_alias="GOCARE_AGENT_NAME")
    livekit_connect_retries: int = Field(
        3, ge=0, le=100, validation_alias="GOCARE_LIVEKIT_CONNECT_RETRIES"
    )
    worker_port: int = Field(8081, ge=0, le=65535, validation_alias="GOCARE_WORKER_PORT")
    """livekit-agents' HTTP server of the worker (health check on ``/``, load on ``/worker``); 0 picks a free one."""
    worker_idle_processes: int | None = Field(None, ge=0, le=64, validation_alias="GOCARE_WORKER_IDLE_PROCESSES")
    """Job processes kept warm; unset = livekit-agents' default (one per CPU in production, 0 in dev)."""
    worker_load_threshold: float | None = Field(None, gt=0, validation_alias="GOCARE_WORKER_LOAD_THRESHOLD")
    """CPU load (0-1) from which the worker takes no new jobs; unset = livekit-agents' default (0.7 in
    production); ``inf`` never refuses a job (what ``worker dev`` does)."""
    worker_drain_timeout: int | None = Field(None, ge=1, validation_alias="GOCARE_WORKER_DRAIN_TIMEOUT")
    """Seconds a stopping worker (SIGTERM) waits for its calls to end; unset = livekit-agents' 3600."""
    worker_job_executor: JobExecutor = Field(JobExecutor.process, validation_alias="GOCARE_WORKER_JOB_EXECUTOR")
    """``process`` (one job process per call) or ``thread`` (calls as threads of the worker process)."""
    worker_loop_block_warn_ms: int = Field(250, ge=0, le=60000, validation_alias="GOCARE_WORKER_LOOP_BLOCK_WARN_MS")
    """livekit-agents' event-loop monitor in the worker and every job process: a loop blocked at least this
    long (ms) is logged as a warning; 0 turns the monitor off. It wakes twice per fifth of this (20-50 ms), in
    every process, warm ones included: livekit's 100 ms default costs 0.6-1 % of a core per process, 250 ms
    half of that (bench/bench_capacity.py, docs/benchmarks.md)."""
    worker_job_memory_limit_mb: float = Field(0, ge=0, validation_alias="GOCARE_WORKER_JOB_MEMORY_LIMIT_MB")
    """A job process above this resident memory (MB) is killed (and its call re-dispatched); 0 = no limit."""
    reconnect_grace: float = Field(15.0, ge=0, le=600, validation_alias="GOCARE_RECONNECT_GRACE")
    """Seconds the agent waits for a user who left to come back (a network change reconnects as a new
    participant) before it ends the call; 0 ends it at once."""
    worker_redispatch_limit: int = Field(2, ge=0, le=100, validation_alias="GOCARE_WORKER_REDISPATCH_LIMIT")
    """Re-dispatches per room and hour after a job process died mid-call (worker/recovery.py); 0 = never."""
    worker_metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="GOCARE_WORKER_METRICS_PORT")
    """Prometheus ``/metrics`` of the worker on this port (livekit-agents' endpoint, with our call counters
    from every job process: worker/metrics.py); unset = no metrics endpoint and nothing counted."""

    # --- token service ----------------------------------------------------------------------------
    port: int = Field(8080, ge=1, le=65535, validation_alias="PORT")
    allowed_origins: str = Field("", validation_alias="ALLOWED_ORIGINS")
    token_ttl: float = Field(900.0, validation_alias="GOCARE_TOKEN_TTL")
    auth_mode: AuthMode = Field(AuthMode.none, validation_alias="GOCARE_AUTH_MODE")
    auth_jwt_secret: SecretStr | None = Field(
        None, validation_alias="GOCARE_AUTH_JWT_SECRET"
    )
    auth_jwks_url: str | None = Field(None, validation_alias="GOCARE_AUTH_JWKS_URL")
    auth_audience: str | None = Field(None, validation_alias="GOCARE_AUTH_AUDIENCE")
    auth_issuer: str | None = Field(None, validation_alias="GOCARE_AUTH_ISSUER")
    auth_name_claim: str = Field("name", validation_alias="GOCARE_AUTH_NAME_CLAIM")
    auth_leeway: float = Field(30.0, ge=0, le=300, validation_alias="GOCARE_AUTH_LEEWAY")
    """Seconds of clock difference tolerated on the app token's ``exp``/``nbf``/``iat``."""
    rate_limit: str = Field("60/minute", validation_alias="GOCARE_RATE_LIMIT")
    rate_limit_storage: str = Field("memory://", validation_alias="GOCARE_RATE_LIMIT_STORAGE")
    """Where the rate-limit counters live: ``memory://`` (each process its own) or ``redis://...`` (one
    budget shared by every process and instance that names the same Redis)."""
    rate_limit_fail_mode: RateLimitFailMode = Field(RateLimitFailMode.open, validation_alias="GOCARE_RATE_LIMIT_FAIL_MODE")
    """When the storage cannot be reached: ``open`` allows the request (a warning at most once a minute),
    ``closed`` answers 503 ``rate_limit_unavailable``."""
    trusted_proxies: str = Field("", validation_alias="GOCARE_TRUSTED_PROXIES")
    """Comma-separated IPs/CIDRs of the proxies whose ``X-Forwarded-For``/``X-Forwarded-Proto`` are believed."""
    metrics: bool = Field(True, validation_alias="GOCARE_METRICS")
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="GOCARE_METRICS_PORT")
    """Serve ``/metrics`` on this port (on the same host) instead of on the service's own port."""
    max_body_bytes: int = Field(
        16 * 1024, ge=256, le=1024 * 1024, validation_alias="GOCARE_MAX_BODY_BYTES"
    )
    http_max_header_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, validation_alias="GOCARE_HTTP_MAX_HEADER_BYTES"
    )
    """Request line + headers of one request (431 above); LiveKit tokens and app JWTs fit in a few KB."""
    http_header_timeout: float = Field(10.0, gt=0, le=600, validation_alias="GOCARE_HTTP_HEADER_TIMEOUT")
    """Seconds from a connection (or a request's first byte) to its complete headers (408 past it)."""
    http_body_timeout: float = Field(30.0, gt=0, le=600, validation_alias="GOCARE_HTTP_BODY_TIMEOUT")
    """Seconds the body may go without a byte arriving (the connection is closed past it)."""
    http_idle_timeout: float = Field(5.0, gt=0, le=600, validation_alias="GOCARE_HTTP_IDLE_TIMEOUT")
    """Seconds a kept-alive connection may wait for its next request."""
    http_max_connections: int = Field(512, ge=1, le=100_000, validation_alias="GOCARE_HTTP_MAX_CONNECTIONS")
    """Open connections per process; more are answered 503 and closed at once."""

    # --- browser playground (token_service/playground) --------------------------------------------
    playground: PlaygroundMode = Field(PlaygroundMode.auto, validation_alias="GOCARE_PLAYGROUND")
    """``GET /playground``: ``auto`` serves it in development only, ``on`` also in production, ``off`` never."""
    playground_sdk_url: str | None = Field(None, validation_alias="GOCARE_PLAYGROUND_SDK_URL")
    """Where the page loads the livekit-client browser SDK from; unset = the pinned version on a public CDN."""
    playground_sdk_sri: str | None = Field(None, validation_alias="GOCARE_PLAYGROUND_SDK_SRI")
    """Subresource Integrity of ``GOCARE_PLAYGROUND_SDK_URL`` (the CDN default carries its own)."""

    # --- providers --------------------------------------------------------------------------------
    llm_api_key: SecretStr | None = Field(None, validation_alias="LLM_API_KEY")
    llm_base_url: str | None = Field(None, validation_alias="LLM_BASE_URL")
    llm_model_name: str = Field("gpt-4o-mini", validation_alias="LLM_MODEL_NAME")
    groq_api_key: SecretStr | None = Field(None, validation_alias="GROQ_API_KEY")
    groq_base_url: str = Field(GROQ_BASE_URL, validation_alias="GOCARE_GROQ_BASE_URL")
    """Groq's OpenAI-compatible base URL (with its ``/openai/v1``): another one for a proxy, or a scripted
    server in tests, which could otherwise never see what the Groq path sends."""
    deepgram_api_key: SecretStr | None = Field(
        None, validation_alias="DEEPGRAM_API_KEY"
    )
    deepgram_base_url: str | None = Field(
        None, validation_alias="GOCARE_DEEPGRAM_BASE_URL"
    )
    stt_provider: STTProvider = Field(STTProvider.deepgram, validation_alias="GOCARE_STT_PROVIDER")
    stt_model: str = Field("nova-3", validation_alias="GOCARE_STT_MODEL")
    stt_language: str = Field("en-US", validation_alias="GOCARE_STT_LANGUAGE")
    tts_provider: TTSProvider = Field(
        TTSProvider.openai, validation_alias="GOCARE_TTS_PROVIDER"
    )
    tts_api_key: SecretStr | None = Field(None, validation_alias="GOCARE_TTS_API_KEY")
    tts_base_url: str | None = Field(None, validation_alias="GOCARE_TTS_BASE_URL")
    tts_model: str = Field("gpt-4o-mini-tts", validation_alias="GOCARE_TTS_MODEL")
    tts_voice: str = Field("alloy", validation_alias="GOCARE_TTS_VOICE")
    azure_speech_key: SecretStr | None = Field(
        None, validation_alias="AZURE_SPEECH_KEY"
    )
    azure_speech_region: str | None = Field(
        None, validation_alias="AZURE_SPEECH_REGION"
    )
    azure_speech_endpoint: str | None = Field(None, validation_alias="GOCARE_AZURE_SPEECH_ENDPOINT")
    """Full text-to-speech URL instead of ``https://<region>.tts.speech.microsoft.com/cognitiveservices/v1``
    (a private endpoint, a proxy, tests)."""
    interruption_detection: InterruptionDetection = Field(
        InterruptionDetection.vad, validation_alias="GOCARE_INTERRUPTION_DETECTION"
    )
    """``vad``: the caller interrupts the agent by speaking, detected locally. ``adaptive``: livekit-agents'
    model on LiveKit Cloud's inference gateway, which receives the caller's audio; never chosen for us
    (livekit-agents turns it on by itself in dev and console modes)."""

    # --- turn taking (docs/benchmarks.md, "Response latency", measured each of these) -----------------
    endpointing_min_delay: float = Field(0.3, ge=0, le=5, validation_alias="GOCARE_ENDPOINTING_MIN_DELAY")
    """Seconds of silence after the caller's speech before their turn can end when the end-of-turn model says
    they are done (livekit's default for its turn detector)."""
    endpointing_max_delay: float = Field(1.2, ge=0, le=10, validation_alias="GOCARE_ENDPOINTING_MAX_DELAY")
    """Seconds the agent waits when the model says the caller is probably not done ("I wanted to ask..."):
    the longest pause a caller can make mid-sentence without being answered (livekit's default is 2.5)."""
    number_endpointing: bool = Field(True, validation_alias="GOCARE_NUMBER_ENDPOINTING")
    """During the number check, the phone parser sets the pause: a complete number for ``GOCARE_PHONE_REGION``
    ends the turn at once, digits that are not a number yet get ``GOCARE_NUMBER_MAX_PAUSE``."""
    number_max_pause: float = Field(2.5, ge=0, le=10, validation_alias="GOCARE_NUMBER_MAX_PAUSE")
    """Seconds a caller may pause between the groups of a number they are still saying ("98765 ... 43210")."""
    turn_grammar: bool = Field(True, validation_alias="GOCARE_TURN_GRAMMAR")
    """Read the words of each turn (English STT only) before the end-of-turn model's wait: a turn ending in a
    preposition, article, possessive, conjunction or filler waits ``GOCARE_TURN_UNFINISHED_PAUSE``; a question
    ending in a content word ends after ``GOCARE_ENDPOINTING_MIN_DELAY`` (conversation/turn_decision.py)."""
    turn_unfinished_pause: float = Field(2.0, ge=0, le=10, validation_alias="GOCARE_TURN_UNFINISHED_PAUSE")
    """Seconds a caller may pause after words that leave the sentence open ("I am looking for ...")."""
    preemptive_tts: bool = Field(True, validation_alias="GOCARE_PREEMPTIVE_TTS")
    """Start speaking the reply (TTS) before the turn is committed, as livekit-agents already does with the
    LLM; a reply the caller's further words make obsolete is thrown away, unheard."""

    # --- conversation -----------------------------------------------------------------------------
    llm_timeout: float = Field(10.0, gt=0, le=120, validation_alias="GOCARE_LLM_TIMEOUT")
    """Seconds the worker (and a voice upload) waits for the language model to start answering, per attempt
    (livekit's 10)."""
    llm_retries: int = Field(3, ge=0, le=10, validation_alias="GOCARE_LLM_RETRIES")
    """Further attempts after a failed or timed-out one, before the caller hears the apology (livekit's 3)."""
    phone_region: str = Field("IN", validation_alias="GOCARE_PHONE_REGION")
    max_auth_attempts: int = Field(
        3, ge=1, le=10, validation_alias="GOCARE_MAX_AUTH_ATTEMPTS"
    )
    database_url: str = Field(
        "sqlite:///gocare-users.db", validation_alias="GOCARE_DATABASE_URL"
    )

    # --- call records (docs/call-records.md) ------------------------------------------------------
    call_records: CallRecordsMode | None = Field(None, validation_alias="GOCARE_CALL_RECORDS")
    """Unset: ``transcript`` in development, ``metadata`` in production (what was said is kept only when
    an operator chose to: ``GOCARE_CALL_RECORDS=transcript``)."""
    call_retention_days: int = Field(30, ge=0, le=3650, validation_alias="GOCARE_CALL_RETENTION_DAYS")
    """Records older than this are deleted by ``gocare calls prune`` and at every worker start (0: kept)."""
    call_webhook_url: str | None = Field(None, validation_alias="GOCARE_CALL_WEBHOOK_URL")
    call_webhook_secret: SecretStr | None = Field(None, validation_alias="GOCARE_CALL_WEBHOOK_SECRET")
    call_webhook_retries: int = Field(4, ge=0, le=10, validation_alias="GOCARE_CALL_WEBHOOK_RETRIES")
    call_webhook_timeout: float = Field(5.0, gt=0, le=60, validation_alias="GOCARE_CALL_WEBHOOK_TIMEOUT")
    call_memory: bool = Field(True, validation_alias="GOCARE_CALL_MEMORY")
    """A verified user's next call knows the summaries of their last calls (needs transcript records)."""
    call_memory_calls: int = Field(3, ge=1, le=10, validation_alias="GOCARE_CALL_MEMORY_CALLS")
    call_summary_timeout: float = Field(6.0, gt=0, le=60, validation_alias="GOCARE_CALL_SUMMARY_TIMEOUT")
    call_analysis: bool = Field(True, validation_alias="GOCARE_CALL_ANALYSIS")
    """At the end of a transcript record, the LLM fills the analysis plan (needs transcript records)."""
    call_analysis_plan: str | None = Field(None, validation_alias="GOCARE_CALL_ANALYSIS_PLAN")
    """The plan file (YAML or JSON); unset: the GoCare plan shipped with the package (records/default_plan.yaml)."""
    call_analysis_timeout: float = Field(8.0, gt=0, le=60, validation_alias="GOCARE_CALL_ANALYSIS_TIMEOUT")
    """Seconds for the whole analysis, the second attempt included."""
    call_alert_webhook_url: str | None = Field(None, validation_alias="GOCARE_CALL_ALERT_WEBHOOK_URL")
    """Where ``call.alert`` goes (signed with GOCARE_CALL_WEBHOOK_SECRET); unset: GOCARE_CALL_WEBHOOK_URL."""
    operator_token: SecretStr | None = Field(None, validation_alias="GOCARE_OPERATOR_TOKEN")
    """Bearer credential of the operator on ``GET /calls`` (every user's calls); unset: no operator access."""

    # --- voice upload -----------------------------------------------------------------------------
    upload_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, validation_alias="GOCARE_UPLOAD_MAX_BYTES"
    )
    upload_max_seconds: float = Field(
        300.0, gt=0, validation_alias="GOCARE_UPLOAD_MAX_SECONDS"
    )
    upload_decode_timeout: float = Field(
        20.0, gt=0, le=600, validation_alias="GOCARE_UPLOAD_DECODE_TIMEOUT"
    )
    """Wall-clock seconds one upload's decode may take before its worker process is killed."""
    stage_timeout: float = Field(
        30.0, gt=0, validation_alias="GOCARE_STAGE_TIMEOUT"
    )
    notify_timeout: float = Field(
        3.0, gt=0, validation_alias="GOCARE_NOTIFY_TIMEOUT"
    )

    # --- validators -------------------------------------------------------------------------------
    @field_validator("token_ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> float:
        return parse_token_ttl(value)

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_storage(cls, value: str) -> str:
        return check_rate_limit_storage(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: str) -> str:
        return ",".join(parse_trusted_proxies(value))

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("livekit_url", "livekit_client_url")
    @classmethod
    def _lk_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip()
        if not _LIVEKIT_URL.fullmatch(url):
            raise ValueError(
                "must be a ws://, wss://, http:// or https:// URL of the form scheme://host[:port][/path], "
                "without user info ('@'), backslashes, spaces, a query or a fragment (URL parsers disagree "
                "on those: 'ws://evil.com\\@localhost' is localhost to Python and evil.com to the LiveKit SDK)"
            )
        port = _LIVEKIT_URL.fullmatch(url).group("port")  # type: ignore[union-attr]  # the URL passed this pattern
        if port is not None and not 0 < int(port) < 65536:
            raise ValueError(f"port {port} is out of range")
        return url

    @field_validator("playground_sdk_url")
    @classmethod
    def _sdk_url(cls, value: str | None) -> str | None:
        """It goes into a ``<script src>`` and the Content-Security-Policy: one plain absolute URL only."""
        if value is None:
            return None
        url = value.strip()
        if not _SDK_URL.fullmatch(url):
            raise ValueError(
                "must be an http:// or https:// URL of the form scheme://host[:port]/path, without user info, "
                "quotes, spaces, ';' or ',' (it is written into the page and its Content-Security-Policy)"
            )
        return url

    @field_validator("playground_sdk_sri")
    @classmethod
    def _sdk_sri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        sri = value.strip()
        if not _SRI.fullmatch(sri):
            raise ValueError("must be a Subresource Integrity value: sha256-, sha384- or sha512- and the base64 digest")
        return sri

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
        "llm_base_url", "deepgram_base_url", "tts_base_url", "auth_jwks_url", "auth_audience", "auth_issuer",
        "azure_speech_region", "azure_speech_endpoint", "livekit_client_url", "worker_idle_processes",
        "worker_load_threshold", "worker_drain_timeout", "worker_metrics_port", "metrics_port", "playground_sdk_url",
        "playground_sdk_sri", "call_records", "call_webhook_url", "call_webhook_secret", "operator_token",
        "call_analysis_plan", "call_alert_webhook_url", mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        """``LLM_API_KEY=`` in a .env file means "not set", not "an empty key"."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("groq_base_url", mode="before")
    @classmethod
    def _groq_url(cls, value: Any) -> Any:
        """``GOCARE_GROQ_BASE_URL=`` (as .env.example has it) means Groq's own URL."""
        return GROQ_BASE_URL if value is None or (isinstance(value, str) and not value.strip()) else value

    @field_validator("livekit_api_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty (the API key of your LiveKit project; devkey for livekit-server --dev)")
        return value.strip()

    @field_validator("livekit_api_secret")
    @classmethod
    def _secret_value(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty (the API secret of your LiveKit project; secret for livekit-server --dev)")
        return value

    @model_validator(mode="after")
    def _deployment_rules(self) -> Settings:
        problems: list[str] = []
        dev_creds = self.livekit_api_key == DEV_API_KEY or self.livekit_api_secret.get_secret_value() == DEV_API_SECRET
        if dev_creds and self.env is Environment.production:
            problems.append(
                "LIVEKIT_API_KEY/LIVEKIT_API_SECRET: the development credentials (devkey/secret) are refused "
                "when GOCARE_ENV=production"
            )
        elif dev_creds:
            for name, url in self._livekit_urls():
                if not (is_loopback_url(url) or is_private_network_url(url)):
                    problems.append(
                        "LIVEKIT_API_KEY/LIVEKIT_API_SECRET: the development credentials (devkey/secret) are "
                        f"refused for a public {name} ({_host(url)}); set your project's key and secret "
                        "(private-network addresses such as 192.168.x.x or 10.0.2.2 are accepted in development)"
                    )
                    break
        if self.env is Environment.production and self.auth_mode is AuthMode.none:
            problems.append("GOCARE_AUTH_MODE: 'none' (no caller authentication) is refused when GOCARE_ENV=production")
        if self.auth_mode is AuthMode.jwt:
            problems.extend(self._jwt_problems())
        if (self.env is Environment.production and self.playground_enabled and self.playground_sdk_url
                and not self.playground_sdk_url.lower().startswith("https://")):
            problems.append("GOCARE_PLAYGROUND_SDK_URL: must be an https:// URL when GOCARE_ENV=production")
        if self.worker_metrics_port is not None and self.worker_metrics_port == self.worker_port:
            problems.append(
                f"GOCARE_WORKER_METRICS_PORT: {self.worker_metrics_port} is also GOCARE_WORKER_PORT (the worker's "
                "health server); use another port"
            )
        problems.extend(self._call_record_problems())
        problems.extend(self._turn_taking_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _turn_taking_problems(self) -> list[str]:
        problems = []
        if self.endpointing_min_delay > self.endpointing_max_delay:
            problems.append("GOCARE_ENDPOINTING_MIN_DELAY: must not be longer than GOCARE_ENDPOINTING_MAX_DELAY")
        if self.turn_unfinished_pause < self.endpointing_max_delay:
            problems.append("GOCARE_TURN_UNFINISHED_PAUSE: must not be shorter than GOCARE_ENDPOINTING_MAX_DELAY (an "
                            "unfinished sentence would get less patience than any other)")
        if self.number_max_pause < self.endpointing_max_delay:
            problems.append("GOCARE_NUMBER_MAX_PAUSE: must not be shorter than GOCARE_ENDPOINTING_MAX_DELAY (a number "
                            "being said would get less patience than a sentence)")
        return problems

    def _call_record_problems(self) -> list[str]:
        problems: list[str] = []
        production = self.env is Environment.production
        url = self.call_webhook_url
        secret = self.call_webhook_secret.get_secret_value() if self.call_webhook_secret else None
        if url is not None:
            problems.extend(_webhook_url_problems("GOCARE_CALL_WEBHOOK_URL", url, production=production))
            if secret is None:
                problems.append("GOCARE_CALL_WEBHOOK_SECRET: required with GOCARE_CALL_WEBHOOK_URL (the webhook is signed)")
        if secret is not None and len(secret.encode()) < (32 if production else 16):
            problems.append(f"GOCARE_CALL_WEBHOOK_SECRET: at least {32 if production else 16} bytes")
        token = self.operator_token.get_secret_value() if self.operator_token else None
        if token is not None and len(token.encode()) < (32 if production else 16):
            problems.append(f"GOCARE_OPERATOR_TOKEN: at least {32 if production else 16} bytes")
        alert_url = self.call_alert_webhook_url
        if alert_url is not None:
            problems.extend(_webhook_url_problems("GOCARE_CALL_ALERT_WEBHOOK_URL", alert_url, production=production))
            if secret is None:
                problems.append("GOCARE_CALL_WEBHOOK_SECRET: required with GOCARE_CALL_ALERT_WEBHOOK_URL (alerts are signed)")
        problems.extend(self._analysis_plan_problems())
        return problems

    def _analysis_plan_problems(self) -> list[str]:
        """The operator's plan file, read and checked now (at start), one line per problem."""
        if self.call_analysis_plan is None:
            return []
        from gocare_voice.records.plan import PlanError, parse_plan, read_plan_file

        path = Path(self.call_analysis_plan)
        try:
            parse_plan(read_plan_file(path))
        except PlanError as error:
            read = error.problems[0].startswith(("cannot read", str(path)))
            return [f"GOCARE_CALL_ANALYSIS_PLAN: {p if read else f'{path}: {p}'}" for p in error.problems]
        return []

    def _jwt_problems(self) -> list[str]:
        secret = self.auth_jwt_secret.get_secret_value() if self.auth_jwt_secret else None
        if not (secret or self.auth_jwks_url):
            return ["GOCARE_AUTH_MODE: 'jwt' needs GOCARE_AUTH_JWT_SECRET or GOCARE_AUTH_JWKS_URL"]
        if secret and self.auth_jwks_url:
            return ["GOCARE_AUTH_JWT_SECRET/GOCARE_AUTH_JWKS_URL: set one of them, not both"]
        if self.env is not Environment.production:
            return []
        problems: list[str] = []
        if secret is not None and len(secret.encode()) < 32:
            problems.append("GOCARE_AUTH_JWT_SECRET: at least 32 bytes are required when GOCARE_ENV=production")
        if self.auth_jwks_url and not self.auth_jwks_url.lower().startswith("https://"):
            problems.append("GOCARE_AUTH_JWKS_URL: must be an https:// URL when GOCARE_ENV=production")
        if not self.auth_audience:
            problems.append(
                "GOCARE_AUTH_AUDIENCE: required when GOCARE_ENV=production (otherwise tokens your identity "
                "provider issued for any other app would be accepted)"
            )
        return problems

    def _livekit_urls(self) -> list[tuple[str, str]]:
        urls = [("LIVEKIT_URL", self.livekit_url)]
        if self.livekit_client_url:
            urls.append(("GOCARE_LIVEKIT_CLIENT_URL", self.livekit_client_url))
        return urls

    def start_warnings(self) -> list[str]:
        """Lines the token service and the worker log once at start: accepted, but worth knowing."""
        dev_creds = self.livekit_api_key == DEV_API_KEY or self.livekit_api_secret.get_secret_value() == DEV_API_SECRET
        private = [f"{name}={url}" for name, url in self._livekit_urls() if is_private_network_url(url)]
        if dev_creds and private:
            return [
                f"development credentials (devkey/secret) accepted for the private-network address {', '.join(private)}: "
                "anyone on that network can use this LiveKit server (development only)"
            ]
        return []

    # --- derived values (what is configured for the providers: check.configuration_facts) -------
    @property
    def client_livekit_url(self) -> str:
        """What apps and browsers are told to connect to (token responses): GOCARE_LIVEKIT_CLIENT_URL,
        else LIVEKIT_URL."""
        return self.livekit_client_url or self.livekit_url

    @property
    def records_level(self) -> CallRecordsMode:
        """``GOCARE_CALL_RECORDS``, or its default for the environment."""
        if self.call_records is not None:
            return self.call_records
        return CallRecordsMode.metadata if self.env is Environment.production else CallRecordsMode.transcript

    @property
    def playground_enabled(self) -> bool:
        if self.playground is PlaygroundMode.auto:
            return self.env is Environment.development
        return self.playground is PlaygroundMode.on

    @property
    def origins(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def trusted_proxy_list(self) -> list[str]:
        return parse_trusted_proxies(self.trusted_proxies)

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
    if field is not None and isinstance(field.validation_alias, str):
        return field.validation_alias
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
