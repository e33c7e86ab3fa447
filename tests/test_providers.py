"""Providers built from Settings: what is missing is named up front, each builder works alone, fallbacks
where several providers are configured, and the LLM builder really talks to an OpenAI-compatible server."""

from __future__ import annotations

import sys

import pytest

from gocare_voice import providers
from gocare_voice.settings import GROQ_BASE_URL, Settings


def make(**values: object) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]  # settings by field name, as pydantic accepts them


def test_nothing_configured_names_every_setting() -> None:
    lines = providers.missing_provider_settings(make())
    assert len(lines) == 3
    assert lines[0].startswith("DEEPGRAM_API_KEY")
    assert lines[1].startswith("LLM_API_KEY") and "GROQ_API_KEY" in lines[1]
    assert lines[2].startswith("GOCARE_TTS_API_KEY")


def test_everything_configured_has_nothing_missing() -> None:
    assert providers.missing_provider_settings(make(deepgram_api_key="dg", llm_api_key="sk")) == []


def test_groq_alone_is_enough_for_the_llm_but_not_for_openai_tts() -> None:
    settings = make(deepgram_api_key="dg", groq_api_key="gq")
    assert providers.missing_llm_settings(settings) == []
    assert providers.missing_tts_settings(settings)[0].startswith("GOCARE_TTS_API_KEY")
    assert providers.missing_provider_settings(make(deepgram_api_key="dg", groq_api_key="gq", tts_provider="deepgram")) == []


def test_tts_provider_specific_lines() -> None:
    assert providers.missing_tts_settings(make(tts_provider="deepgram"))[0].startswith("DEEPGRAM_API_KEY")
    azure = providers.missing_tts_settings(make(tts_provider="azure"))
    assert azure[0].startswith("AZURE_SPEECH_KEY") and azure[1].startswith("AZURE_SPEECH_REGION")
    if not providers.azure_plugin_available():
        assert "livekit-plugins-azure" in azure[2]


def test_builders_refuse_with_the_missing_settings() -> None:
    with pytest.raises(providers.ProviderConfigError) as stt:
        providers.build_stt(make())
    assert stt.value.problems[0].startswith("DEEPGRAM_API_KEY")
    with pytest.raises(providers.ProviderConfigError):
        providers.build_llm(make())
    with pytest.raises(providers.ProviderConfigError):
        providers.build_tts(make(tts_provider="deepgram"))


@pytest.mark.parametrize(
    ("base", "endpoint", "expected"),
    [
        (None, "listen", "https://api.deepgram.com/v1/listen"),
        ("http://127.0.0.1:9000", "listen", "http://127.0.0.1:9000/v1/listen"),
        ("http://127.0.0.1:9000/", "speak", "http://127.0.0.1:9000/v1/speak"),
        ("https://proxy.example/dg/v1", "listen", "https://proxy.example/dg/v1/listen"),
        ("https://proxy.example/v1/listen", "speak", "https://proxy.example/v1/speak"),
        ("wss://api.deepgram.com/v1/listen", "listen", "wss://api.deepgram.com/v1/listen"),
    ],
)
def test_deepgram_endpoint(base: str | None, endpoint: str, expected: str) -> None:
    assert providers.deepgram_endpoint(base, endpoint) == expected


def test_stt_is_deepgram_with_our_model_language_and_url() -> None:
    from livekit.plugins import deepgram

    stt = providers.build_stt(make(deepgram_api_key="dg", deepgram_base_url="http://127.0.0.1:9", stt_model="nova-2",
                                   stt_language="en-IN"))
    assert isinstance(stt, deepgram.STT)
    assert stt.model == "nova-2"
    assert stt._opts.endpoint_url == "http://127.0.0.1:9/v1/listen"
    assert stt._opts.language.language == "en"


def test_llm_selection() -> None:
    from livekit.agents import llm as lk_llm
    from livekit.plugins import openai

    only_llm = providers.build_llm(make(llm_api_key="sk", llm_base_url="http://127.0.0.1:1/v1", llm_model_name="m1"))
    assert isinstance(only_llm, openai.LLM) and only_llm.model == "m1"
    assert str(only_llm._client.base_url).startswith("http://127.0.0.1:1/v1")

    only_groq = providers.build_llm(make(groq_api_key="gq"))
    assert isinstance(only_groq, openai.LLM)
    assert str(only_groq._client.base_url).rstrip("/") == GROQ_BASE_URL
    assert only_groq.model == providers.GROQ_DEFAULT_MODEL

    groq_named = providers.build_llm(make(groq_api_key="gq", llm_model_name="llama-3.1-8b-instant"))
    assert groq_named.model == "llama-3.1-8b-instant"

    both = providers.build_llm(make(llm_api_key="sk", groq_api_key="gq"))
    assert isinstance(both, lk_llm.FallbackAdapter)
    assert [i.model for i in both._llm_instances] == ["gpt-4o-mini", providers.GROQ_DEFAULT_MODEL]


async def test_a_closing_llm_factory_closes_every_client_it_built() -> None:
    """What the end of a call (and the main process, for a crashed one) builds the summary's and analysis's
    LLM with: a ``FallbackAdapter``'s own ``aclose`` closes neither client, the factory closes both."""
    from livekit.agents import llm as lk_llm

    factory = providers.ClosingLLMFactory(make(llm_api_key="sk", groq_api_key="gq"))
    first, second = factory(), factory()
    assert isinstance(first, lk_llm.FallbackAdapter) and isinstance(second, lk_llm.FallbackAdapter)
    clients = [*first._llm_instances, *second._llm_instances]
    assert len(clients) == 4 and not any(c._client.is_closed() for c in clients)
    await first.aclose()
    assert not any(c._client.is_closed() for c in clients)  # why the factory exists
    await factory.aclose()
    assert all(c._client.is_closed() for c in clients)
    await factory.aclose()  # twice is nothing


def test_tts_selection_and_fallback() -> None:
    from livekit.agents import tts as lk_tts
    from livekit.plugins import deepgram, openai

    openai_only = providers.build_tts(make(llm_api_key="sk"))
    assert isinstance(openai_only, openai.TTS)

    dg_first = providers.build_tts(make(deepgram_api_key="dg", llm_api_key="sk", tts_provider="deepgram"))
    assert isinstance(dg_first, lk_tts.FallbackAdapter)
    assert [type(t) for t in dg_first._tts_instances] == [deepgram.TTS, openai.TTS]
    assert dg_first._tts_instances[0].model == providers.DEEPGRAM_DEFAULT_TTS_MODEL  # not the OpenAI model name

    openai_first = providers.build_tts(make(deepgram_api_key="dg", tts_api_key="tk", tts_base_url="http://127.0.0.1:2/v1"))
    assert [type(t) for t in openai_first._tts_instances] == [openai.TTS, deepgram.TTS]


def test_turn_detection_is_the_bundled_local_model_without_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("LIVEKIT_DEV_MODE", "1")  # dev mode would otherwise pick the cloud model
    detector = providers.build_turn_detection(make())
    from livekit.agents import inference

    assert isinstance(detector, inference.TurnDetector)
    assert detector.model == "turn-detector-v1-mini"
    # the deprecated plugin (Hugging Face download) is never imported: its runner would fail the worker
    assert "livekit.plugins.turn_detector" not in sys.modules


def test_turn_detection_falls_back_to_vad(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from livekit.agents import inference

    def broken(**_: object) -> None:
        raise RuntimeError("model missing")

    monkeypatch.setattr(inference, "TurnDetector", broken)
    assert providers.build_turn_detection(make()) == "vad"
    assert "falling back to VAD turn detection" in caplog.text


def test_vad_is_livekits_native_silero_with_the_plugins_options() -> None:
    from livekit.agents import inference

    vad = providers.build_vad()
    assert isinstance(vad, inference.VAD) and vad.model == "silero"
    assert vad._opts.min_silence_duration == 0.55 and vad._opts.min_speech_duration == 0.05
    assert vad._opts.activation_threshold == 0.5 and vad._opts.prefix_padding_duration == 0.5


def test_no_plugin_for_the_vad_and_no_onnxruntime_in_the_worker() -> None:
    # the silero plugin built an onnxruntime session per job process (~25 MB each); the worker imports neither now
    assert "livekit.plugins.silero" not in providers.plugin_modules(make())
    probe = ("import sys; from gocare_voice import providers; providers.import_plugins(); providers.build_vad(); "
             "print('onnxruntime' in sys.modules, 'livekit.plugins.silero' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_native_vad_gives_the_silero_plugins_probabilities_on_real_speech() -> None:
    """Why the swap is safe for turn taking: the same model, the same P(speech) for every 32 ms window (the
    plugin's ONNX session on float samples, livekit-local-inference's on int16)."""
    import numpy as np
    import livekit.local_inference as local_inference
    from livekit.plugins.silero import onnx_model

    from scripted.audio_tools import ESPEAK, speech_pcm

    if not ESPEAK:
        pytest.skip("espeak-ng not installed (apt-get install -y espeak-ng; .ci/run does it)")
    speech = np.frombuffer(speech_pcm("My number is oh seven seven double nine. When is my appointment?", rate=16000),
                           dtype=np.int16)
    pcm = np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(8000, np.int16)])
    plugin = onnx_model.OnnxModel(onnx_session=onnx_model.new_inference_session(True), sample_rate=16000)
    native = local_inference.VAD()
    windows = [pcm[i:i + 512] for i in range(0, len(pcm) - 512, 512)]
    ours = np.array([native.predict(w) for w in windows])
    theirs = np.array([plugin(w.astype(np.float32) / np.iinfo(np.int16).max) for w in windows])
    assert (theirs > 0.5).sum() > len(windows) / 3  # speech found at all
    assert np.abs(ours - theirs).max() < 0.01


async def test_the_vad_hears_a_sentence_start_and_end() -> None:
    """Real speech through the VAD as a session streams it (50 ms frames at the room's input rate): one
    utterance, its end reported ``min_silence_duration`` after the speech stops, not before."""
    from livekit import rtc
    from livekit.agents import vad as lk_vad

    from gocare_voice.worker.entrypoint import ROOM_INPUT_SAMPLE_RATE
    from scripted.audio_tools import ESPEAK, speech_pcm, trim_silence

    if not ESPEAK:
        pytest.skip("espeak-ng not installed (apt-get install -y espeak-ng; .ci/run does it)")
    rate = ROOM_INPUT_SAMPLE_RATE
    speech = trim_silence(speech_pcm("I would like to know when my next appointment is.", rate=rate), rate=rate)
    silence = bytes(2 * rate)  # 1 s
    pcm = silence + speech + silence + silence
    stream = providers.build_vad().stream()
    frame_bytes = 2 * rate // 20
    for i in range(0, len(pcm) - frame_bytes + 1, frame_bytes):
        stream.push_frame(rtc.AudioFrame(pcm[i:i + frame_bytes], rate, 1, frame_bytes // 2))
    stream.end_input()
    events = [ev async for ev in stream if ev.type is not lk_vad.VADEventType.INFERENCE_DONE]
    assert [ev.type for ev in events] == [lk_vad.VADEventType.START_OF_SPEECH, lk_vad.VADEventType.END_OF_SPEECH]
    speech_end = (len(silence) + len(speech)) / 2 / rate
    end = events[-1].timestamp
    # 0.55 s of silence (min_silence_duration) after the last voiced window; livekit's 0.25 default would fail this
    assert speech_end + 0.4 < end < speech_end + 0.9, (speech_end, end)


async def test_built_llm_really_talks_to_an_openai_compatible_server(openai_server) -> None:  # type: ignore[no-untyped-def]  # a pytest fixture, typed by the fixture
    from livekit.agents import ChatContext

    from scripted.openai_server import Reply, Rule

    openai_server.script(Rule(user="ping", reply=Reply(text="pong from the scripted model")))
    llm = providers.build_llm(make(llm_api_key="sk-test", llm_base_url=openai_server.base_url, llm_model_name="scripted-1"))
    chat = ChatContext.empty()
    chat.add_message(role="user", content="ping")
    text = ""
    async with llm.chat(chat_ctx=chat) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                text += chunk.delta.content
    assert text == "pong from the scripted model"
    [request] = openai_server.chat_requests()
    assert request.model == "scripted-1"


# --- no audio leaves for a service nobody configured ---------------------------------------------------------

@pytest.mark.parametrize(("mode", "gateway"), [("vad", False), ("adaptive", True)])
async def test_interruption_detection_is_chosen_explicitly(mode: str, gateway: bool, monkeypatch, openai_server) -> None:
    """livekit-agents 1.8 builds its adaptive interruption detector (a client of LiveKit Cloud's inference
    gateway, which receives the caller's audio) in dev and console modes unless told otherwise. Our sessions
    build one only with GOCARE_INTERRUPTION_DETECTION=adaptive, in dev mode with Cloud-looking credentials."""
    from livekit.agents import Agent, inference

    from gocare_voice.providers import build_vad
    from gocare_voice.conversation.state import SessionState
    from gocare_voice.worker.entrypoint import build_session

    monkeypatch.setenv("LIVEKIT_DEV_MODE", "1")  # what `gocare worker dev` / `console` set
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIcloud")  # the gateway client would find credentials
    monkeypatch.setenv("LIVEKIT_API_SECRET", "cloud-secret")
    settings = Settings(llm_api_key="sk-test", llm_base_url=openai_server.base_url, deepgram_api_key="dg",
                        deepgram_base_url="http://127.0.0.1:9", tts_api_key="tts", tts_base_url=openai_server.base_url,
                        interruption_detection=mode)
    session = build_session(settings, vad=build_vad(), state=SessionState(room_name=None))
    await session.start(Agent(instructions="test"))
    try:
        detector = session._activity._interruption_detector  # what AgentActivity resolved for this session
        assert isinstance(detector, inference.AdaptiveInterruptionDetector) is gateway
    finally:
        await session.aclose()
