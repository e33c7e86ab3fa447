"""STT / LLM / TTS / VAD / turn detection built from ``Settings``.

One builder for the worker and for the voice upload: each of ``build_stt``, ``build_llm`` and
``build_tts`` is callable on its own, so the upload path builds only what it needs. Keys are passed
explicitly from ``Settings`` (the plugins would otherwise read ``OPENAI_API_KEY`` & co. from the
environment, which is how a worker ends up talking to the wrong account).

``missing_provider_settings`` lets the worker refuse to start with a line naming each missing setting,
instead of failing at the first user turn with a provider stack trace.

livekit imports happen inside the functions: ``gocare --help`` and ``gocare check`` must stay light.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from gocare_voice.settings import Settings, TTSProvider

if TYPE_CHECKING:  # pragma: no cover - typing only
    from livekit.agents import llm as lk_llm
    from livekit.agents import stt as lk_stt
    from livekit.agents import tts as lk_tts
    from livekit.agents import vad as lk_vad

logger = logging.getLogger("gocare.providers")

DEFAULT_OPENAI_LLM_MODEL = "gpt-4o-mini"
GROQ_DEFAULT_MODEL = "llama-3.3-70b-versatile"
DEEPGRAM_DEFAULT_TTS_MODEL = "aura-2-andromeda-en"
DEEPGRAM_API_ROOT = "https://api.deepgram.com"

TURN_DETECTOR_LOCAL_VERSION = "v1-mini"
AZURE_DEFAULT_VOICE = "en-US-JennyNeural"
AZURE_EXTRA_MISSING = (
    "GOCARE_TTS_PROVIDER=azure needs the azure extra, which is not installed: "
    "pip install 'gocare-voice[azure]' (or use GOCARE_TTS_PROVIDER=openai|deepgram)"
)


class ProviderConfigError(RuntimeError):
    """A provider cannot be built from the settings; ``problems`` names each missing setting."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- what is missing -------------------------------------------------------------------------------


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    text = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return text or None


def azure_plugin_available() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("livekit.plugins.azure") is not None
    except (ImportError, ValueError):
        return False


def missing_stt_settings(settings: Settings) -> list[str]:
    if _secret(settings.deepgram_api_key) is None:
        return ["DEEPGRAM_API_KEY is not set (speech-to-text uses Deepgram)"]
    return []


def missing_llm_settings(settings: Settings) -> list[str]:
    if _secret(settings.llm_api_key) is None and _secret(settings.groq_api_key) is None:
        return ["LLM_API_KEY is not set (or set GROQ_API_KEY to use Groq's OpenAI-compatible endpoint)"]
    return []


def missing_tts_settings(settings: Settings) -> list[str]:
    provider = settings.tts_provider
    if provider is TTSProvider.deepgram:
        if _secret(settings.deepgram_api_key) is None:
            return ["DEEPGRAM_API_KEY is not set (GOCARE_TTS_PROVIDER=deepgram)"]
        return []
    if provider is TTSProvider.azure:
        problems: list[str] = []
        if _secret(settings.azure_speech_key) is None:
            problems.append("AZURE_SPEECH_KEY is not set (GOCARE_TTS_PROVIDER=azure)")
        if not settings.azure_speech_region:
            problems.append("AZURE_SPEECH_REGION is not set (GOCARE_TTS_PROVIDER=azure)")
        if not azure_plugin_available():
            problems.append(AZURE_EXTRA_MISSING)
        return problems
    if _secret(settings.tts_api_key) is None and _secret(settings.llm_api_key) is None:
        return ["GOCARE_TTS_API_KEY is not set (nor LLM_API_KEY, used for OpenAI TTS when no TTS key is given)"]
    return []


def missing_provider_settings(settings: Settings) -> list[str]:
    """One human line per missing setting, each naming the variable; empty when everything can be built."""
    return missing_stt_settings(settings) + missing_llm_settings(settings) + missing_tts_settings(settings)


# --- URLs --------------------------------------------------------------------------------------------


def deepgram_endpoint(base_url: str | None, endpoint: str) -> str:
    """``GOCARE_DEEPGRAM_BASE_URL`` is the API root (``https://api.deepgram.com``, a proxy, or a scripted
    server in tests); the plugins want the full endpoint URL (``.../v1/listen`` or ``.../v1/speak``).
    A value already ending in ``/v1`` or in an endpoint is accepted as well."""
    root = (base_url or DEEPGRAM_API_ROOT).strip().rstrip("/")
    parts = urlsplit(root)
    path = parts.path.rstrip("/")
    for suffix in ("/listen", "/speak"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if not path.endswith("/v1"):
        path = path + "/v1"
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/{endpoint}", parts.query, ""))


# --- builders ----------------------------------------------------------------------------------------


def import_plugins(settings: Settings | None = None) -> list[str]:
    """Import the livekit plugins we use, on the main thread, before the worker starts.

    livekit-agents refuses to register a plugin from any other thread ("Plugins must be registered on the
    main thread"), and console mode and the thread executor build providers in a job thread. Importing
    here, from ``build_server``, registers them once up front."""
    import importlib

    names = ["livekit.plugins.silero", "livekit.plugins.deepgram", "livekit.plugins.openai"]
    if settings is not None and settings.tts_provider is TTSProvider.azure and azure_plugin_available():
        names.append("livekit.plugins.azure")
    for name in names:
        importlib.import_module(name)
    return names


def build_vad() -> lk_vad.VAD:
    """Silero VAD (weights ship inside livekit-plugins-silero). Blocking, ~100 ms: call it once per
    process, in the worker's prewarm step, and share the instance between sessions."""
    from livekit.plugins import silero

    return silero.VAD.load()


def build_turn_detection(settings: Settings | None = None) -> Any:
    """End-of-turn model that runs locally with no download at run time.

    ``livekit-plugins-turn-detector`` (``EnglishModel``/``MultilingualModel``) fetches its ONNX weights from
    Hugging Face (``download-files``) and is deprecated in livekit-agents 1.8; its replacement,
    ``livekit.agents.inference.TurnDetector`` with ``version="v1-mini"``, runs the weights bundled inside the
    ``livekit-local-inference`` wheel. We pin ``v1-mini`` because the automatic choice picks the cloud model
    in dev mode. Should it fail to load, we fall back to VAD turn detection and say so.
    """
    try:
        from livekit.agents import inference

        return inference.TurnDetector(version=TURN_DETECTOR_LOCAL_VERSION)
    except Exception as error:  # noqa: BLE001 - any failure means "use VAD", never a dead worker
        logger.warning(
            "local turn detector unavailable (%s: %s); falling back to VAD turn detection",
            type(error).__name__,
            error,
        )
        return "vad"


def build_turn_handling(settings: Settings) -> dict[str, Any]:
    """``AgentSession(turn_handling=...)``: the end-of-turn model and, always explicit, the interruption mode.

    Left unset, livekit-agents 1.8 picks its *adaptive* interruption detector in ``dev`` and ``console``
    modes (``LIVEKIT_DEV_MODE=1``), which streams the caller's audio to LiveKit Cloud's inference gateway
    whenever the agent speaks. For a care app no audio may leave for a service nobody configured, so the
    mode is ``GOCARE_INTERRUPTION_DETECTION`` (default ``vad``: the local Silero VAD)."""
    return {
        "turn_detection": build_turn_detection(settings),
        "interruption": {"mode": settings.interruption_detection.value},
    }


def build_stt(settings: Settings, *, http_session: Any = None) -> lk_stt.STT:
    """Deepgram streaming STT. ``http_session`` (an aiohttp.ClientSession) is for use outside a worker job,
    e.g. the token service's voice upload; inside a job the plugin takes the job's shared session."""
    problems = missing_stt_settings(settings)
    if problems:
        raise ProviderConfigError(problems)
    from livekit.plugins import deepgram

    return deepgram.STT(
        model=settings.stt_model,
        language=settings.stt_language,
        api_key=_secret(settings.deepgram_api_key),
        base_url=deepgram_endpoint(settings.deepgram_base_url, "listen"),
        http_session=http_session,
    )


def llm_targets(settings: Settings) -> list[dict[str, str | None]]:
    """The OpenAI-compatible endpoints to use, most preferred first (no secrets in the repr of the
    result is not guaranteed: never log it). ``LLM_API_KEY`` first; ``GROQ_API_KEY`` alone selects Groq,
    both together make Groq the fallback."""
    targets: list[dict[str, str | None]] = []
    llm_key = _secret(settings.llm_api_key)
    groq_key = _secret(settings.groq_api_key)
    if llm_key:
        targets.append(
            {"label": "llm", "model": settings.llm_model_name, "base_url": settings.llm_base_url, "api_key": llm_key}
        )
    if groq_key:
        model = GROQ_DEFAULT_MODEL
        if not llm_key and settings.llm_model_name != DEFAULT_OPENAI_LLM_MODEL:
            model = settings.llm_model_name
        targets.append({"label": "groq", "model": model, "base_url": settings.groq_base_url, "api_key": groq_key})
    return targets


def build_llm(settings: Settings) -> lk_llm.LLM:
    """OpenAI-compatible chat LLM; a ``FallbackAdapter`` when both LLM_API_KEY and GROQ_API_KEY are set."""
    problems = missing_llm_settings(settings)
    if problems:
        raise ProviderConfigError(problems)
    from livekit.agents import llm as lk_llm
    from livekit.plugins import openai

    instances = []
    for target in llm_targets(settings):
        kwargs: dict[str, Any] = {"model": target["model"], "api_key": target["api_key"]}
        if target["base_url"]:
            kwargs["base_url"] = target["base_url"]
        instances.append(openai.LLM(**kwargs))
    if len(instances) == 1:
        return instances[0]
    return lk_llm.FallbackAdapter(instances)


def _openai_tts(settings: Settings) -> lk_tts.TTS | None:
    from livekit.plugins import openai

    key = _secret(settings.tts_api_key)
    base_url = settings.tts_base_url
    if key is None:
        # no dedicated TTS key: the LLM account's key and URL go together
        key = _secret(settings.llm_api_key)
        base_url = base_url or settings.llm_base_url
    if key is None:
        return None
    kwargs: dict[str, Any] = {"model": settings.tts_model, "voice": settings.tts_voice, "api_key": key}
    if base_url:
        kwargs["base_url"] = base_url
    return openai.TTS(**kwargs)


def _deepgram_tts(settings: Settings, http_session: Any = None) -> lk_tts.TTS | None:
    from livekit.plugins import deepgram

    key = _secret(settings.deepgram_api_key)
    if key is None:
        return None
    model = settings.tts_model if settings.tts_model.startswith("aura") else DEEPGRAM_DEFAULT_TTS_MODEL
    return deepgram.TTS(
        model=model, api_key=key, base_url=deepgram_endpoint(settings.deepgram_base_url, "speak"),
        http_session=http_session,
    )


def azure_configured(settings: Settings) -> bool:
    """Key, region and the plugin: what ``/health`` and ``gocare check`` call "Azure configured"."""
    return (
        _secret(settings.azure_speech_key) is not None and bool(settings.azure_speech_region)
        and azure_plugin_available()
    )


def _azure_tts(settings: Settings, http_session: Any = None) -> lk_tts.TTS | None:
    if not azure_configured(settings):
        return None
    from gocare_voice.conversation.azure_tts import build_azure_tts

    # GOCARE_TTS_VOICE defaults to an OpenAI voice ("alloy"); Azure voices look like "en-US-JennyNeural"
    voice = settings.tts_voice if settings.tts_voice.count("-") >= 2 else AZURE_DEFAULT_VOICE
    return build_azure_tts(
        key=_secret(settings.azure_speech_key) or "", region=settings.azure_speech_region or "",
        endpoint=settings.azure_speech_endpoint, voice=voice, language=settings.stt_language,
        http_session=http_session,
    )


def build_tts(settings: Settings, *, http_session: Any = None) -> lk_tts.TTS:
    """TTS chosen by ``GOCARE_TTS_PROVIDER``; every other provider that is also configured becomes a
    fallback behind it (``tts.FallbackAdapter``), so a provider outage does not silence the agent."""
    problems = missing_tts_settings(settings)
    if problems:
        raise ProviderConfigError(problems)
    from livekit.agents import tts as lk_tts

    builders: dict[TTSProvider, Any] = {
        TTSProvider.openai: _openai_tts,
        TTSProvider.deepgram: _deepgram_tts,
        TTSProvider.azure: _azure_tts,
    }
    order = [settings.tts_provider] + [p for p in builders if p is not settings.tts_provider]
    built = (
        builders[p](settings) if p is TTSProvider.openai else builders[p](settings, http_session) for p in order
    )
    instances = [tts for tts in built if tts is not None]
    if len(instances) == 1:
        return instances[0]
    return lk_tts.FallbackAdapter(instances)


def describe_providers(settings: Settings) -> dict[str, Any]:
    """What the worker logs at start: provider names and models, never keys."""
    return {
        "stt": f"deepgram:{settings.stt_model}" if not missing_stt_settings(settings) else None,
        "llm": [f"{t['label']}:{t['model']}" for t in llm_targets(settings)],
        "tts": settings.tts_provider.value,
        "deepgram_base_url": settings.deepgram_base_url,
        "llm_base_url": settings.llm_base_url,
    }
