"""The scripted Azure text-to-speech endpoint, driven by livekit's real azure plugin (built by our
provider code) and by bare HTTP requests: what it accepts and refuses must be what Azure accepts and
refuses, or the end-to-end tests that rely on it prove nothing."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import aiohttp
import av
import pytest
from livekit.agents import APIConnectOptions, APIStatusError

from gocare_voice.providers import build_azure_tts
from scripted import audio_tools
from scripted.azure_tts_server import ScriptedAzureTTSServer

pytest.importorskip("livekit.plugins.azure")

SSML = ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        '<voice name="en-US-JennyNeural">{text}</voice></speak>')
NO_RETRY = APIConnectOptions(max_retry=0, timeout=5)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _tts(server: ScriptedAzureTTSServer, http: aiohttp.ClientSession, *, key: str | None = None):
    return build_azure_tts(key=key or server.api_key, region=server.region, endpoint=server.endpoint,
                           voice="en-GB-SoniaNeural", language="en-GB", http_session=http)


async def _post(http: aiohttp.ClientSession, server: ScriptedAzureTTSServer, body: str, *,
                fmt: str = "raw-24khz-16bit-mono-pcm", content_type: str = "application/ssml+xml",
                key: str | None = None) -> tuple[int, bytes, str]:
    headers = {"Ocp-Apim-Subscription-Key": key or server.api_key, "X-Microsoft-OutputFormat": fmt,
               "Content-Type": content_type}
    async with http.post(server.endpoint, data=body.encode(), headers=headers) as response:
        return response.status, await response.read(), response.headers.get("Content-Type", "")


async def test_the_plugin_gets_speech_at_its_sample_rate(azure_tts_server, http) -> None:
    frame = await _tts(azure_tts_server, http).synthesize("Your appointment is at nine.",
                                                          conn_options=NO_RETRY).collect()
    assert frame.sample_rate == 24000 and frame.num_channels == 1
    assert frame.samples_per_channel / 24000 > 1.0  # espeak-ng speaking the sentence, not a click
    assert audio_tools.rms_s16(bytes(frame.data)) > 500
    (request,) = azure_tts_server.synth_requests()
    assert (request.status, request.text, request.voice, request.language) == (
        200, "Your appointment is at nine.", "en-GB-SoniaNeural", "en-GB")
    assert request.output_format == "raw-24khz-16bit-mono-pcm" and request.key == azure_tts_server.api_key


async def test_xml_special_characters_reach_azure_as_text(azure_tts_server, http) -> None:
    # our builder escapes; the bare plugin would send "Tom & Jerry" into the SSML as is (a 400 from Azure)
    await _tts(azure_tts_server, http).synthesize("Tom & Jerry <3 'quotes'", conn_options=NO_RETRY).collect()
    assert azure_tts_server.spoken() == ["Tom & Jerry <3 'quotes'"]
    assert "Tom &amp; Jerry &lt;3" in azure_tts_server.synth_requests()[0].ssml


async def test_wrong_key_is_401(azure_tts_server, http) -> None:
    with pytest.raises(APIStatusError) as raised:
        await _tts(azure_tts_server, http, key="not-the-key").synthesize("Hello", conn_options=NO_RETRY).collect()
    assert raised.value.status_code == 401
    assert [r.status for r in azure_tts_server.synth_requests()] == [401]


@pytest.mark.parametrize("ssml", [
    SSML.format(text="Tom & Jerry"), SSML.format(text="a <b"), "<speak>unclosed", "not xml at all",
])
async def test_malformed_ssml_is_400(azure_tts_server, http, ssml) -> None:
    status, _, _ = await _post(http, azure_tts_server, ssml)
    assert status == 400
    (request,) = azure_tts_server.synth_requests()
    assert request.status == 400 and request.text is None


async def test_refusals_like_azure(azure_tts_server, http) -> None:
    ok = SSML.format(text="Hello")
    assert (await _post(http, azure_tts_server, ok, content_type="text/plain"))[0] == 415
    assert (await _post(http, azure_tts_server, ok, fmt="webm-24khz-16bit-mono-opus"))[0] == 400
    no_voice = '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis">Hello</speak>'
    assert (await _post(http, azure_tts_server, no_voice))[0] == 400
    assert azure_tts_server.spoken() == []


@pytest.mark.parametrize(("fmt", "container", "rate"), [
    ("riff-16khz-16bit-mono-pcm", "wav", 16000),
    ("audio-24khz-48kbitrate-mono-mp3", "mp3", 24000),
])
async def test_container_formats_are_real_files(azure_tts_server, http, fmt, container, rate) -> None:
    status, audio, _ = await _post(http, azure_tts_server, SSML.format(text="Good morning"), fmt=fmt)
    assert status == 200
    with av.open(io.BytesIO(audio)) as decoded:
        assert decoded.format.name == container and decoded.streams.audio[0].rate == rate


async def test_fail_status_delay_and_reset(azure_tts_server, http) -> None:
    azure_tts_server.fail_status = 429
    assert (await _post(http, azure_tts_server, SSML.format(text="Hello")))[0] == 429
    azure_tts_server.reset()
    assert azure_tts_server.synth_requests() == [] and azure_tts_server.fail_status is None
    azure_tts_server.delay = 2.0
    with pytest.raises(Exception) as raised:  # the plugin's timeout is the connect timeout; total is 30 s
        async with http.post(azure_tts_server.endpoint, data=SSML.format(text="Hi").encode(),
                             headers={"Ocp-Apim-Subscription-Key": azure_tts_server.api_key,
                                      "X-Microsoft-OutputFormat": "raw-16khz-16bit-mono-pcm",
                                      "Content-Type": "application/ssml+xml"},
                             timeout=aiohttp.ClientTimeout(total=0.5)):
            pass
    assert isinstance(raised.value, TimeoutError | aiohttp.ServerTimeoutError)
