from __future__ import annotations

import pytest

from gocare_voice.settings import (
    AuthMode,
    Settings,
    SettingsError,
    is_loopback_url,
    load_settings,
    parse_duration,
    parse_rate_limit,
)


def test_defaults_serve_livekit_dev_server() -> None:
    s = load_settings(env_file=None)
    assert s.livekit_url == "ws://localhost:7880"
    assert s.livekit_api_key == "devkey"
    assert s.livekit_api_secret.get_secret_value() == "secret"
    assert s.agent_name == "multi-assistant"
    assert s.token_ttl == 900
    assert s.auth_mode is AuthMode.none
    assert s.llm_model_name == "gpt-4o-mini"


def test_original_deployment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "wss://gocare.livekit.cloud")
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIabc")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s" * 40)
    monkeypatch.setenv("LLM_API_KEY", "sk-test")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg")
    monkeypatch.setenv("GOCARE_TOKEN_TTL", "10m")
    monkeypatch.setenv("GOCARE_RATE_LIMIT", "5/second")
    s = load_settings(env_file=None)
    assert s.livekit_api_key == "APIabc"
    assert s.llm_api_key is not None and s.deepgram_api_key is not None and not s.groq_configured
    assert s.token_ttl == 600
    assert s.rate == (5, 1.0)
    assert "sk-test" not in repr(s)  # secrets never print


def test_env_file_is_read(tmp_path) -> None:
    env = tmp_path / ".env"
    env.write_text("GOCARE_AGENT_NAME=other-agent\nPORT=9000\n")
    s = load_settings(env_file=env)
    assert s.agent_name == "other-agent" and s.port == 9000


def test_dev_credentials_refused_for_remote_url() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, livekit_url="wss://example.livekit.cloud")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("LIVEKIT_API_KEY/LIVEKIT_API_SECRET:")
    assert "example.livekit.cloud" in info.value.problems[0]


def test_production_refuses_dev_credentials_and_open_auth() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, env="production")
    text = "\n".join(info.value.problems)
    assert "GOCARE_ENV=production" in text
    assert any(p.startswith("GOCARE_AUTH_MODE:") for p in info.value.problems)
    ok = load_settings(env_file=None, env="production", livekit_api_key="APIx", livekit_api_secret="y" * 32,
                       auth_mode="jwt", auth_jwt_secret="z" * 32, auth_audience="gocare-app")
    assert ok.auth_mode is AuthMode.jwt


def test_production_jwt_rules() -> None:
    base = {"env": "production", "livekit_api_key": "APIx", "livekit_api_secret": "y" * 32, "auth_mode": "jwt"}
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, **base, auth_jwt_secret="short", auth_audience=None)
    names = sorted(p.split(":")[0] for p in info.value.problems)
    assert names == ["GOCARE_AUTH_AUDIENCE", "GOCARE_AUTH_JWT_SECRET"]
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, **base, auth_jwks_url="http://auth.example/jwks", auth_audience="a")
    assert info.value.problems == ["GOCARE_AUTH_JWKS_URL: must be an https:// URL when GOCARE_ENV=production"]
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, auth_mode="jwt", auth_jwt_secret="x" * 32, auth_jwks_url="https://a/jwks")
    assert info.value.problems == ["GOCARE_AUTH_JWT_SECRET/GOCARE_AUTH_JWKS_URL: set one of them, not both"]


@pytest.mark.parametrize("name", ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"])
def test_blank_livekit_credentials_are_one_line(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "  ")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None)
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(f"{name}: must not be empty")


def test_each_invalid_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOCARE_TOKEN_TTL", "soon")
    monkeypatch.setenv("GOCARE_RATE_LIMIT", "lots")
    monkeypatch.setenv("PORT", "99999")
    monkeypatch.setenv("GOCARE_AUTH_MODE", "magic")
    monkeypatch.setenv("GOCARE_PHONE_REGION", "XX")
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None)
    names = sorted(p.split(":")[0] for p in info.value.problems)
    assert names == ["GOCARE_AUTH_MODE", "GOCARE_PHONE_REGION", "GOCARE_RATE_LIMIT", "GOCARE_TOKEN_TTL", "PORT"]
    assert all("\n" not in p for p in info.value.problems)


def test_jwt_mode_needs_a_key_source() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, auth_mode="jwt")
    assert info.value.problems == ["GOCARE_AUTH_MODE: 'jwt' needs GOCARE_AUTH_JWT_SECRET or GOCARE_AUTH_JWKS_URL"]


@pytest.mark.parametrize(("text", "seconds"), [("900", 900), (900, 900), ("15m", 900), ("1h", 3600),
                                                ("250ms", 0.25), ("1.5h", 5400)])
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-5", "0", "5 weeks"])
def test_parse_duration_rejects(text) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_rate_limit() -> None:
    assert parse_rate_limit("30/minute") == (30, 60.0)
    assert parse_rate_limit(" 2 / seconds ") == (2, 1.0)
    assert parse_rate_limit("off") is None and parse_rate_limit("") is None
    for bad in ("30", "x/minute", "0/minute", "3/fortnight"):
        with pytest.raises(ValueError):
            parse_rate_limit(bad)


@pytest.mark.parametrize(("url", "local"), [("ws://localhost:7880", True), ("ws://127.0.0.1:7880", True),
                                            ("ws://[::1]:7880", True), ("wss://x.livekit.cloud", False),
                                            ("ws://10.0.0.5:7880", False), ("ws://127.9.9.9", True)])
def test_loopback_detection(url, local) -> None:
    assert is_loopback_url(url) is local


def test_bare_names_from_the_platform_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heroku & co. set DATABASE_URL, PORT-like names for themselves; only our documented names count."""
    for name, value in (("ENV", "nonsense"), ("DATABASE_URL", "postgresql://x/y"), ("RATE_LIMIT", "off"),
                        ("AUTH_MODE", "jwt"), ("AGENT_NAME", "other")):
        monkeypatch.setenv(name, value)
    s = load_settings(env_file=None)
    assert s.database_url == "sqlite:///gocare-users.db" and s.rate == (60, 60.0)
    assert s.auth_mode is AuthMode.none and s.agent_name == "multi-assistant"
    assert load_settings(env_file=None, rate_limit="off").rate is None  # keyword arguments by field name


def test_settings_are_immutable() -> None:
    from pydantic import ValidationError

    s = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        s.agent_name = "x"  # type: ignore[misc]  # the very assignment a frozen model refuses


def _documented_names() -> list[str]:
    return [str(f.validation_alias) for f in Settings.model_fields.values()]


def test_env_example_lists_every_setting_and_loads() -> None:
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / ".env.example"
    names = {line.split("=", 1)[0] for line in example.read_text().splitlines() if "=" in line
             and not line.startswith("#")}
    assert set(_documented_names()) <= names
    assert load_settings(env_file=example).agent_name == "multi-assistant"


def test_configuration_doc_lists_every_setting() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    missing = [name for name in _documented_names() if f"`{name}`" not in doc]
    assert not missing


# --- phones and emulators: private-network addresses with the development credentials -----------------

@pytest.mark.parametrize("url", [
    "ws://10.0.2.2:7880", "ws://192.168.1.20:7880", "ws://172.20.0.5:7880", "ws://169.254.10.1:7880",
    "ws://[fe80::1]:7880", "ws://my-laptop.local:7880",
])
def test_dev_credentials_accepted_for_private_network_addresses_with_one_warning(url: str) -> None:
    s = load_settings(env_file=None, livekit_url=url)
    warnings = s.start_warnings()
    assert len(warnings) == 1 and "development credentials" in warnings[0] and url in warnings[0]
    assert load_settings(env_file=None).start_warnings() == []  # localhost: nothing to say


@pytest.mark.parametrize("url", ["ws://8.8.8.8:7880", "wss://example.livekit.cloud", "ws://192.0.2.1:7880",
                                 "ws://100.64.0.1:7880"])
def test_dev_credentials_still_refused_for_public_addresses(url: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, livekit_url=url)
    assert len(info.value.problems) == 1 and "public LIVEKIT_URL" in info.value.problems[0]


def test_dev_credentials_refused_in_production_even_on_the_lan() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, env="production", livekit_url="ws://192.168.1.20:7880",
                      auth_mode="jwt", auth_jwt_secret="z" * 32, auth_audience="a")
    assert any("GOCARE_ENV=production" in p for p in info.value.problems)


def test_client_url_defaults_to_livekit_url_and_is_checked_too() -> None:
    assert load_settings(env_file=None).client_livekit_url == "ws://localhost:7880"
    s = load_settings(env_file=None, livekit_client_url="ws://10.0.2.2:7880")
    assert s.livekit_url == "ws://localhost:7880" and s.client_livekit_url == "ws://10.0.2.2:7880"
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, livekit_client_url="wss://public.example.com")
    assert "GOCARE_LIVEKIT_CLIENT_URL" in info.value.problems[0]
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, livekit_client_url="not a url")
    assert info.value.problems[0].startswith("GOCARE_LIVEKIT_CLIENT_URL:")


def test_interruption_detection_defaults_to_local_vad() -> None:
    assert load_settings(env_file=None).interruption_detection.value == "vad"
    assert load_settings(env_file=None, interruption_detection="adaptive").interruption_detection.value == "adaptive"
    with pytest.raises(SettingsError) as info:
        load_settings(env_file=None, interruption_detection="cloud")
    assert info.value.problems[0].startswith("GOCARE_INTERRUPTION_DETECTION:")


def test_connect_retries_mean_retries_after_the_first_attempt() -> None:
    """GOCARE_LIVEKIT_CONNECT_RETRIES=N: N+1 attempts, as docs/configuration.md and .env.example say."""
    import asyncio
    import socket
    from pathlib import Path

    from gocare_voice.worker.preflight import check_livekit

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings(env_file=None, livekit_url=f"ws://127.0.0.1:{port}", livekit_connect_retries=2)
    result = asyncio.run(check_livekit(settings, retry_delay=0.01))
    assert not result.ok and result.attempts == 3 and "after 3 attempts" in str(result.problem)
    root = Path(__file__).resolve().parent.parent
    assert "four attempts in all" in (root / "docs" / "configuration.md").read_text()
    assert "four\n# attempts in all" in (root / ".env.example").read_text()


def test_groq_base_url_defaults_to_groq_and_a_blank_value_means_the_default(tmp_path) -> None:
    from gocare_voice.settings import GROQ_BASE_URL

    assert load_settings(env_file=None).groq_base_url == GROQ_BASE_URL
    env = tmp_path / "groq.env"
    env.write_text("GROQ_API_KEY=gq\nGOCARE_GROQ_BASE_URL=\n")  # as .env.example has it
    assert load_settings(env_file=env).groq_base_url == GROQ_BASE_URL
    env.write_text("GROQ_API_KEY=gq\nGOCARE_GROQ_BASE_URL=http://127.0.0.1:9/openai/v1\n")
    assert load_settings(env_file=env).groq_base_url == "http://127.0.0.1:9/openai/v1"


@pytest.mark.parametrize("env, named", [
    ({"GOCARE_ENDPOINTING_MIN_DELAY": "2", "GOCARE_ENDPOINTING_MAX_DELAY": "1"}, "GOCARE_ENDPOINTING_MIN_DELAY"),
    ({"GOCARE_ENDPOINTING_MAX_DELAY": "3", "GOCARE_NUMBER_MAX_PAUSE": "2"}, "GOCARE_NUMBER_MAX_PAUSE"),
    ({"GOCARE_ENDPOINTING_MAX_DELAY": "1.5", "GOCARE_TURN_UNFINISHED_PAUSE": "1"}, "GOCARE_TURN_UNFINISHED_PAUSE"),
    ({"GOCARE_TURN_UNFINISHED_PAUSE": "-1"}, "GOCARE_TURN_UNFINISHED_PAUSE"),
    ({"GOCARE_TURN_GRAMMAR": "perhaps"}, "GOCARE_TURN_GRAMMAR"),
])
def test_turn_taking_delays_that_contradict_each_other_are_refused(env: dict[str, str], named: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=named):
        Settings()


def test_the_turn_taking_defaults_are_consistent() -> None:
    settings = Settings()
    assert settings.endpointing_min_delay <= settings.endpointing_max_delay <= settings.number_max_pause
    assert settings.endpointing_max_delay <= settings.turn_unfinished_pause
