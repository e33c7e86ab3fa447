"""``GET /playground`` through the real ASGI app: when it is served, its Content-Security-Policy, the SDK
``<script>`` it renders, its static files, and that nothing secret reaches the page. The page at work in a
real browser: tests/room/test_room_playground.py."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from gocare_voice.settings import SettingsError, load_settings
from gocare_voice.token_service.app import create_app
from gocare_voice.token_service.playground.page import content_security_policy, load_pin, SdkSource

LK_KEY, LK_SECRET = "APIgocare", "lk-secret-" * 4
APP_SECRET = "app-auth-secret-" * 3
LLM_KEY = "sk-playground-unit-test-key"


def client(**overrides: object) -> TestClient:
    base: dict[str, object] = {"livekit_api_key": LK_KEY, "livekit_api_secret": LK_SECRET, "rate_limit": "off"}
    base.update(overrides)
    return TestClient(create_app(load_settings(env_file=None, **base)))


def production(**overrides: object) -> dict[str, object]:
    return {"env": "production", "auth_mode": "jwt", "auth_jwt_secret": APP_SECRET, "auth_audience": "gocare-app",
            "livekit_url": "wss://lk.gocare.example", **overrides}


class PageParts(HTMLParser):
    """The elements that matter for the page's policy: scripts, styles, inline handlers and style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.body: dict[str, str | None] = {}
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        if tag == "style":
            self.inline.append("<style>")
        if tag == "body":
            self.body = attributes
        self.inline += [f"{tag} {name}" for name in attributes if name == "style" or name.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"script body {data.strip()[:40]!r}")


def parse(html: str) -> PageParts:
    parts = PageParts()
    parts.feed(html)
    return parts


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";"))}


# --- when it is served ------------------------------------------------------------------------------

def test_served_in_development_by_default() -> None:
    with client() as c:
        page = c.get("/playground")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "Content-Security-Policy" in page.headers
    assert parse(page.text).body["data-auth-mode"] == "none"


@pytest.mark.parametrize("overrides", [{"playground": "off"}, production(), production(playground="off")])
def test_not_served_when_off_or_in_production_unless_enabled(overrides: dict[str, object]) -> None:
    with client(**overrides) as c:
        for path in ("/playground", "/playground/static/playground.js", "/playground/static/playground.css"):
            answer = c.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"] == "not_found"


def test_production_serves_it_when_enabled_and_the_page_asks_for_the_bearer_token() -> None:
    with client(**production(playground="on")) as c:
        page = c.get("/playground")
        assert page.status_code == 200
        parts = parse(page.text)
        assert parts.body["data-auth-mode"] == "jwt" and parts.body["data-environment"] == "production"
        # the token endpoint the page calls still wants the bearer token: the page grants nothing by itself
        refused = c.post("/api/token", json={"room_config": {}})
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    policy = directives(page.headers["content-security-policy"])
    assert policy["connect-src"] == ["'self'", "wss://lk.gocare.example", "https://lk.gocare.example"]


def test_production_refuses_a_plain_http_sdk_url() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env_file=None, livekit_api_key=LK_KEY, livekit_api_secret=LK_SECRET,
                      **production(playground="on", playground_sdk_url="http://cdn.internal/livekit-client.umd.js"))
    assert refused.value.problems == ["GOCARE_PLAYGROUND_SDK_URL: must be an https:// URL when GOCARE_ENV=production"]


def test_not_in_the_api_schema() -> None:
    with client() as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith("/playground")]


# --- the policy and the SDK ---------------------------------------------------------------------------

def test_content_security_policy_allows_this_service_the_sdk_origin_and_livekit_only() -> None:
    with client(livekit_client_url="ws://192.168.1.20:7880") as c:
        page = c.get("/playground")
    policy = directives(page.headers["content-security-policy"])
    assert policy == {
        "default-src": ["'none'"],
        "script-src": ["'self'", "https://cdn.jsdelivr.net"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "media-src": ["'self'", "blob:"],
        "connect-src": ["'self'", "ws://192.168.1.20:7880", "http://192.168.1.20:7880"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
    }
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["permissions-policy"].startswith("microphone=(self)")


def test_the_page_has_no_inline_script_or_style() -> None:
    with client() as c:
        parts = parse(c.get("/playground").text)
    assert parts.inline == []
    assert [script.get("src") for script in parts.scripts] == [load_pin().cdn_url, "playground/static/playground.js"]


def test_default_sdk_is_the_pinned_cdn_file_with_its_integrity_hash() -> None:
    pin = load_pin()
    assert pin.version in pin.cdn_url and pin.cdn_url.startswith("https://cdn.jsdelivr.net/npm/livekit-client@")
    with client() as c:
        sdk = parse(c.get("/playground").text).scripts[0]
    assert sdk == {"src": pin.cdn_url, "integrity": pin.integrity, "crossorigin": "anonymous", "defer": None}


def test_sdk_url_setting_without_sri_renders_no_integrity() -> None:
    url = "https://static.gocare.example/vendor/livekit-client.umd.js"
    with client(playground_sdk_url=url) as c:
        page = c.get("/playground")
    assert parse(page.text).scripts[0] == {"src": url, "crossorigin": "anonymous", "defer": None}
    assert directives(page.headers["content-security-policy"])["script-src"] == ["'self'", "https://static.gocare.example"]


def test_sdk_url_setting_with_sri() -> None:
    url = "http://127.0.0.1:9000/livekit-client.umd.js"
    sri = "sha384-" + base64.b64encode(hashlib.sha384(b"sdk").digest()).decode()
    with client(playground_sdk_url=url, playground_sdk_sri=sri) as c:
        page = c.get("/playground")
    assert parse(page.text).scripts[0]["integrity"] == sri
    assert directives(page.headers["content-security-policy"])["script-src"] == ["'self'", "http://127.0.0.1:9000"]


@pytest.mark.parametrize("variable, value", [
    ("playground_sdk_url", "https://cdn.example/x.js' 'unsafe-inline"),
    ("playground_sdk_url", "https://cdn.example/x.js; script-src *"),
    ("playground_sdk_url", "javascript:alert(1)"),
    ("playground_sdk_url", "https://user@cdn.example/x.js"),
    ("playground_sdk_url", "//cdn.example/x.js"),
    ("playground_sdk_sri", "md5-abc"),
    ("playground_sdk_sri", 'sha384-abc" onload="x'),
    ("playground", "maybe"),
])
def test_bad_playground_settings_are_refused_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(env_file=None, **{variable: value})
    assert refused.value.problems[0].startswith(f"GOCARE_{variable.upper()}:")


def test_policy_of_livekit_cloud_allows_its_region_hosts() -> None:
    policy = content_security_policy(sdk=SdkSource(url="https://cdn.example/a.js", integrity=None),
                                     livekit_url="wss://gocare-abc123.livekit.cloud")
    assert directives(policy)["connect-src"] == [
        "'self'", "wss://gocare-abc123.livekit.cloud", "https://gocare-abc123.livekit.cloud",
        "wss://*.livekit.cloud", "https://*.livekit.cloud",
    ]


def test_policy_of_a_secure_livekit_url() -> None:
    policy = content_security_policy(sdk=SdkSource(url="https://cdn.example/a.js", integrity=None),
                                     livekit_url="wss://lk.example:7443/base")
    assert directives(policy)["connect-src"] == ["'self'", "wss://lk.example:7443", "https://lk.example:7443"]


# --- static files and secrets ----------------------------------------------------------------------

def test_static_files_and_nothing_else() -> None:
    with client() as c:
        script = c.get("/playground/static/playground.js")
        style = c.get("/playground/static/playground.css")
        assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
        assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
        assert script.headers["x-content-type-options"] == "nosniff"
        assert "registerTextStreamHandler('lk.transcription'" in script.text
        for missing in ("page.html", "sdk.json", "..%2Fpage.py", "playground.js.map", "../__init__.py"):
            answer = c.get(f"/playground/static/{missing}")
            assert answer.status_code == 404, missing
            assert answer.json()["error"] == "not_found"


def test_nothing_secret_in_the_page() -> None:
    secrets = {"livekit_api_secret": LK_SECRET, "llm_api_key": LLM_KEY, "auth_jwt_secret": APP_SECRET}
    with client(**{**secrets, "auth_mode": "jwt"}) as c:
        served = [c.get(path).text for path in
                  ("/playground", "/playground/static/playground.js", "/playground/static/playground.css")]
    for text in served:
        for secret in (*secrets.values(), LK_KEY):
            assert secret not in text


def test_pinned_integrity_is_the_hash_of_the_npm_file() -> None:
    """sdk.json's hash is what the page's <script integrity> carries; the CDN serves the npm file as is."""
    from harness.browser import browser_required, locate_sdk

    sdk = locate_sdk()
    if sdk is None:
        reason = "the livekit-client SDK file is not installed (scripts/playground-sdk --install)"
        if browser_required():
            pytest.fail(f"GOCARE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    pin = load_pin()
    assert sdk.parts[-4:] == ("node_modules", pin.package, *pin.file.split("/")) or sdk.name == pin.file.split("/")[-1]
    digest = base64.b64encode(hashlib.sha384(sdk.read_bytes()).digest()).decode()
    assert f"sha384-{digest}" == pin.integrity
