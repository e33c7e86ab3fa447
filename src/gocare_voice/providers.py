"""STT / LLM / TTS / VAD / turn detection built from ``Settings``: the one place the worker, the voice
upload pipeline, ``/health`` and ``gocare check`` ask which providers are configured, build them, and
import their livekit plugins.

Speech providers are rows of two tables, ``STT_PROVIDERS`` and ``TTS_PROVIDERS``: a row names the plugin
module, what is missing to build it (one line per setting, naming the variable), the builder, and the
``gocare check`` label and hint. Adding a provider = its settings (``settings.py``: the enum value and its
key) + one row here. The LLM is one OpenAI-compatible client per configured endpoint (``llm_targets``).

Each of ``build_stt``, ``build_llm`` and ``build_tts`` is callable on its own, so the upload path builds only
what it needs. Keys are passed explicitly from ``Settings`` (the plugins would otherwise read
``OPENAI_API_KEY`` & co. from the environment, which is how a worker ends up talking to the wrong account).

livekit imports happen inside the functions: ``gocare --help`` and ``gocare check`` must stay light.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape

from gocare_voice.settings import Settings, STTProvider, TTSProvider

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

TURN_DETECTOR_LOCAL_VERSION: Literal["v1-mini"] = "v1-mini"
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


def missing_llm_settings(settings: Settings) -> list[str]:
    if _secret(settings.llm_api_key) is None and _secret(settings.groq_api_key) is None:
        return ["LLM_API_KEY is not set (or set GROQ_API_KEY to use Groq's OpenAI-compatible endpoint)"]
    return []


def missing_stt_settings(settings: Settings) -> list[str]:
    return STT_PROVIDERS[settings.stt_provider].missing(settings)


def missing_tts_settings(settings: Settings) -> list[str]:
    return TTS_PROVIDERS[settings.tts_provider].missing(settings)


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


# --- speech providers: one row each ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechProvider:
    """One STT or TTS provider. ``build(settings, http_session)``: ``http_session`` (an aiohttp session) is
    for use outside a worker job (the voice upload); inside a job the plugins take the job's own."""

    name: str
    plugin: str
    """The livekit plugin module, imported on the main thread before anything is built."""
    missing: Callable[[Settings], list[str]]
    build: Callable[[Settings, Any], Any]
    label: str
    """How ``gocare check`` names it."""
    hint: str
    """Which settings make it work, as ``gocare check`` shows them."""
    optional_extra: str | None = None
    """The pip extra that installs the plugin, when it is not a dependency of the package."""


def _missing_deepgram(purpose: str) -> Callable[[Settings], list[str]]:
    def missing(settings: Settings) -> list[str]:
        if _secret(settings.deepgram_api_key) is None:
            return [f"DEEPGRAM_API_KEY is not set ({purpose})"]
        return []

    return missing


def _deepgram_stt(settings: Settings, http_session: Any) -> lk_stt.STT[Any]:
    from livekit.plugins import deepgram

    return deepgram.STT(
        model=settings.stt_model,
        language=settings.stt_language,
        api_key=_secret(settings.deepgram_api_key) or "",  # never empty here: checked by missing()
        base_url=deepgram_endpoint(settings.deepgram_base_url, "listen"),
        http_session=http_session,
    )


STT_PROVIDERS: dict[STTProvider, SpeechProvider] = {
    STTProvider.deepgram: SpeechProvider(
        name="deepgram", plugin="livekit.plugins.deepgram",
        missing=_missing_deepgram("speech-to-text uses Deepgram"), build=_deepgram_stt,
        label="Deepgram", hint="DEEPGRAM_API_KEY",
    ),
}
"""``GOCARE_STT_PROVIDER`` -> the provider (no fallback: one streaming STT per session)."""


def _missing_openai_tts(settings: Settings) -> list[str]:
    if _secret(settings.tts_api_key) is None and _secret(settings.llm_api_key) is None:
        return ["GOCARE_TTS_API_KEY is not set (nor LLM_API_KEY, used for OpenAI TTS when no TTS key is given)"]
    return []


def _openai_tts(settings: Settings, http_session: Any) -> lk_tts.TTS[Any]:
    from livekit.plugins import openai

    key = _secret(settings.tts_api_key)
    base_url = settings.tts_base_url
    if key is None:
        # no dedicated TTS key: the LLM account's key and URL go together
        key = _secret(settings.llm_api_key)
        base_url = base_url or settings.llm_base_url
    kwargs: dict[str, Any] = {"model": settings.tts_model, "voice": settings.tts_voice, "api_key": key}
    if base_url:
        kwargs["base_url"] = base_url
    return openai.TTS(**kwargs)


def _deepgram_tts(settings: Settings, http_session: Any) -> lk_tts.TTS[Any]:
    from livekit.plugins import deepgram

    model = settings.tts_model if settings.tts_model.startswith("aura") else DEEPGRAM_DEFAULT_TTS_MODEL
    return deepgram.TTS(
        model=model, api_key=_secret(settings.deepgram_api_key),
        base_url=deepgram_endpoint(settings.deepgram_base_url, "speak"), http_session=http_session,
    )


def plugin_installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def azure_plugin_available() -> bool:
    return plugin_installed("livekit.plugins.azure")


def _missing_azure_tts(settings: Settings) -> list[str]:
    problems: list[str] = []
    if _secret(settings.azure_speech_key) is None:
        problems.append("AZURE_SPEECH_KEY is not set (GOCARE_TTS_PROVIDER=azure)")
    if not settings.azure_speech_region:
        problems.append("AZURE_SPEECH_REGION is not set (GOCARE_TTS_PROVIDER=azure)")
    if not azure_plugin_available():
        problems.append(AZURE_EXTRA_MISSING)
    return problems


def azure_configured(settings: Settings) -> bool:
    """Key, region and the plugin: what ``/health`` and ``gocare check`` call "Azure configured"."""
    return not _missing_azure_tts(settings)


def _azure_tts(settings: Settings, http_session: Any) -> lk_tts.TTS[Any]:
    """Azure through livekit's azure plugin (the ``azure`` extra), with two corrections: the plugin puts the
    text into its SSML as is, so an LLM reply with ``&`` or ``<`` ("Tom & Jerry") made Azure answer 400 and
    the agent fall silent (the text is XML-escaped here); and every value is passed explicitly (the plugin
    would otherwise read ``AZURE_SPEECH_ENDPOINT`` and friends from the environment)."""
    # GOCARE_TTS_VOICE defaults to an OpenAI voice ("alloy"); Azure voices look like "en-US-JennyNeural"
    voice = settings.tts_voice if settings.tts_voice.count("-") >= 2 else AZURE_DEFAULT_VOICE
    return build_azure_tts(
        key=_secret(settings.azure_speech_key) or "", region=settings.azure_speech_region or "",
        endpoint=settings.azure_speech_endpoint, voice=voice, language=settings.stt_language,
        http_session=http_session,
    )


def build_azure_tts(
    *, key: str, region: str, endpoint: str | None, voice: str, language: str | None, http_session: Any = None
) -> lk_tts.TTS[Any]:
    """The XML-escaping Azure TTS (imports the Azure Speech SDK: only when Azure is configured)."""
    from livekit.plugins import azure

    class EscapedAzureTTS(azure.TTS):
        def synthesize(self, text: str, **kwargs: Any) -> Any:
            return super().synthesize(escape(text), **kwargs)

    # the full URL always: given none, the plugin would look for AZURE_SPEECH_ENDPOINT in the environment
    url = endpoint or f"https://{region}.tts.speech.microsoft.com/cognitiveservices/v1"
    tts: lk_tts.TTS[Any] = EscapedAzureTTS(
        speech_key=key, speech_region=region, speech_endpoint=url, voice=voice,
        language=language or None, http_session=http_session,
    )
    return tts


TTS_PROVIDERS: dict[TTSProvider, SpeechProvider] = {
    TTSProvider.openai: SpeechProvider(
        name="openai", plugin="livekit.plugins.openai", missing=_missing_openai_tts, build=_openai_tts,
        label="openai", hint="GOCARE_TTS_API_KEY or LLM_API_KEY (OpenAI-compatible speech)",
    ),
    TTSProvider.deepgram: SpeechProvider(
        name="deepgram", plugin="livekit.plugins.deepgram",
        missing=_missing_deepgram("GOCARE_TTS_PROVIDER=deepgram"), build=_deepgram_tts,
        label="deepgram", hint="DEEPGRAM_API_KEY (GOCARE_TTS_PROVIDER=deepgram)",
    ),
    TTSProvider.azure: SpeechProvider(
        name="azure", plugin="livekit.plugins.azure", missing=_missing_azure_tts, build=_azure_tts,
        label="azure", hint="AZURE_SPEECH_KEY and AZURE_SPEECH_REGION (GOCARE_TTS_PROVIDER=azure)",
        optional_extra="azure",
    ),
}
"""``GOCARE_TTS_PROVIDER`` -> the provider; every other configured one becomes a fallback behind it."""


# --- what is configured (/health, gocare check) ---------------------------------------------------------


def configured_tts(settings: Settings) -> list[SpeechProvider]:
    """The chosen TTS first, then every other one that is configured (its fallbacks)."""
    chosen = TTS_PROVIDERS[settings.tts_provider]
    others = [p for key, p in TTS_PROVIDERS.items() if key is not settings.tts_provider and not p.missing(settings)]
    return [chosen, *others]


def provider_facts(settings: Settings) -> dict[str, bool]:
    """What ``/health`` reports about providers: true only when the provider could really be built from
    these settings (the same checks the worker makes before it starts). ``stt_configured`` is the chosen
    STT; ``deepgram_configured``, ``groq_configured`` and ``azure_tts_configured`` are kept for the
    dashboards and apps that already read them."""
    return {
        "llm_configured": not missing_llm_settings(settings),
        "stt_configured": not missing_stt_settings(settings),
        "deepgram_configured": not STT_PROVIDERS[STTProvider.deepgram].missing(settings),
        "groq_configured": settings.groq_configured,
        "azure_tts_configured": azure_configured(settings),
        "tts_configured": not missing_tts_settings(settings),
    }


# --- plugins and builders ----------------------------------------------------------------------------


def plugin_modules(settings: Settings | None) -> list[str]:
    """The livekit plugin modules these settings use: the STT's, the LLM's (OpenAI-compatible), and each TTS's
    that is chosen or configured; a plugin of an optional extra only when it is installed (its absence is
    reported as "not configured" instead). The VAD needs none: it is livekit-agents' own (``build_vad``)."""
    stt = STT_PROVIDERS[settings.stt_provider] if settings is not None else STT_PROVIDERS[STTProvider.deepgram]
    names = [stt.plugin, "livekit.plugins.openai"]
    tts_rows = configured_tts(settings) if settings is not None else []
    for row in tts_rows:
        if row.optional_extra is not None and not plugin_installed(row.plugin):
            continue
        if row.plugin not in names:
            names.append(row.plugin)
    return names


def import_plugins(settings: Settings | None = None) -> list[str]:
    """Import the livekit plugins we use, on the main thread, before anything is built.

    livekit-agents refuses to register a plugin from any other thread ("Plugins must be registered on the
    main thread"), and console mode and the thread executor build providers in a job thread, the token
    service's TestClient in its portal thread. Importing here (``build_server``, the upload pipeline's
    constructor) registers them once up front."""
    import importlib

    names = plugin_modules(settings)
    for name in names:
        importlib.import_module(name)
    return names


def build_vad() -> lk_vad.VAD:
    """Silero VAD, run by ``livekit-local-inference`` (``livekit.agents.inference.VAD``, livekit-agents' own
    default VAD), with the options of ``livekit-plugins-silero``'s ``VAD.load()``, which the worker used until
    2026-12-07 (livekit's 0.25 s default ``min_silence_duration`` would end the caller's speech, and start the
    endpointing delay, 0.3 s sooner than the turn-taking settings were tuned for). The same Silero model
    gives the same speech probabilities as the plugin's ONNX session (checked window by window), but its
    weights are one native singleton that livekit-agents loads in the forkserver and every job process
    shares, where the plugin built an onnxruntime session in each job process (about 25 MB private memory
    each, and onnxruntime itself imported in the worker); and a 32 ms window costs a fifth of the CPU.
    One difference: the plugin smoothed each window's probability with the previous one (0.35 of it), livekit's
    stream takes it as it is; the room turn-taking tests (pauses mid-sentence, numbers in groups, talking over
    the agent) pass unchanged.
    Cheap to build: call it once per process, in the worker's prewarm step, and share it between
    sessions (each session's stream keeps its own state)."""
    from livekit.agents import inference

    return inference.VAD(model="silero", min_speech_duration=0.05, min_silence_duration=0.55,
                         prefix_padding_duration=0.5, activation_threshold=0.5)


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
    mode is ``GOCARE_INTERRUPTION_DETECTION`` (default ``vad``: the local Silero VAD). The endpointing delays
    and preemptive TTS are ``GOCARE_ENDPOINTING_*`` and ``GOCARE_PREEMPTIVE_TTS``."""
    return {
        "turn_detection": build_turn_detection(settings),
        "interruption": {"mode": settings.interruption_detection.value},
        "endpointing": {"min_delay": settings.endpointing_min_delay, "max_delay": settings.endpointing_max_delay},
        "preemptive_generation": {"enabled": True, "preemptive_tts": settings.preemptive_tts},
    }


def build_stt(settings: Settings, *, http_session: Any = None) -> lk_stt.STT[Any]:
    """The STT chosen by ``GOCARE_STT_PROVIDER``, or ``ProviderConfigError`` naming what is missing."""
    problems = missing_stt_settings(settings)
    if problems:
        raise ProviderConfigError(problems)
    stt: lk_stt.STT[Any] = STT_PROVIDERS[settings.stt_provider].build(settings, http_session)
    return stt


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


def build_llm(settings: Settings) -> lk_llm.LLM[Any]:
    """OpenAI-compatible chat LLM; a ``FallbackAdapter`` when both LLM_API_KEY and GROQ_API_KEY are set."""
    return combine_llms(build_llm_clients(settings))


def build_llm_clients(settings: Settings) -> list[lk_llm.LLM[Any]]:
    """One ``openai.LLM`` per configured endpoint (``llm_targets``), most preferred first. Each owns an HTTP
    client: a long-lived process that builds them for a while (the worker's main process, analysing a
    crashed call) closes each one with ``aclose``, since a ``FallbackAdapter``'s own ``aclose`` closes none
    of the LLMs it holds (livekit-agents 1.8)."""
    problems = missing_llm_settings(settings)
    if problems:
        raise ProviderConfigError(problems)
    from livekit.plugins import openai

    instances: list[lk_llm.LLM[Any]] = []
    for target in llm_targets(settings):
        kwargs: dict[str, Any] = {"model": target["model"], "api_key": target["api_key"]}
        if target["base_url"]:
            kwargs["base_url"] = target["base_url"]
        instances.append(openai.LLM(**kwargs))
    return instances


class ClosingLLMFactory:
    """``build_llm`` for a caller that must close what it built: each call builds the configured LLM
    (blocking: call it in a thread) and keeps its clients, which ``aclose`` closes (a ``FallbackAdapter``'s
    own ``aclose`` does not). For LLMs built outside a job process's lifetime: the worker's main process,
    or a call's end under the thread executor, where nothing else would close them."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clients: list[lk_llm.LLM[Any]] = []

    def __call__(self) -> lk_llm.LLM[Any]:
        built = build_llm_clients(self._settings)
        self._clients.extend(built)
        return combine_llms(built)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            try:
                await client.aclose()
            except Exception as error:  # noqa: BLE001 - a client that will not close is not worth more
                logging.getLogger("gocare.providers").debug("LLM client not closed: %s", type(error).__name__)


def combine_llms(instances: list[lk_llm.LLM[Any]]) -> lk_llm.LLM[Any]:
    """The one LLM, or a ``FallbackAdapter`` trying them in order."""
    from livekit.agents import llm as lk_llm

    if len(instances) == 1:
        return instances[0]
    return lk_llm.FallbackAdapter(instances)


def build_tts(settings: Settings, *, http_session: Any = None) -> lk_tts.TTS[Any]:
    """TTS chosen by ``GOCARE_TTS_PROVIDER``; every other provider that is also configured becomes a
    fallback behind it (``tts.FallbackAdapter``), so a provider outage does not silence the agent."""
    problems = missing_tts_settings(settings)
    if problems:
        raise ProviderConfigError(problems)
    from livekit.agents import tts as lk_tts

    instances = [row.build(settings, http_session) for row in configured_tts(settings)]
    if len(instances) == 1:
        only: lk_tts.TTS[Any] = instances[0]
        return only
    return lk_tts.FallbackAdapter(instances)
