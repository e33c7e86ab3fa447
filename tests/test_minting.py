from __future__ import annotations

import datetime
import json

import jwt
from livekit import api

from gocare_voice.token_service.minting import TokenMinter, TokenRequest

KEY, SECRET = "APItest", "s3cr3t-" * 6


def _minter(ttl: float = 900) -> TokenMinter:
    return TokenMinter(api_key=KEY, api_secret=SECRET, agent_name="multi-assistant", ttl_seconds=ttl)


def test_token_verifies_with_livekit_token_verifier() -> None:
    metadata = json.dumps({"userId": "u-1", "userName": "John Doe"})
    token = _minter().mint(TokenRequest(room="room-1", identity="u-1", name="John Doe", metadata=metadata))
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.identity == "u-1"
    assert claims.name == "John Doe"
    assert json.loads(claims.metadata) == {"userId": "u-1", "userName": "John Doe"}
    video = claims.video
    assert video.room_join is True and video.room == "room-1"
    assert video.can_publish and video.can_subscribe and video.can_publish_data
    assert video.can_update_own_metadata is True
    assert video.room_admin is None and video.room_create is None
    assert claims.room_config.agents[0].agent_name == "multi-assistant"


def test_claims_are_exactly_what_livekit_access_token_writes() -> None:
    """Same claims as livekit-api's own AccessToken for the same request (bar the clock fields)."""
    metadata = json.dumps({"userId": "u-2", "userName": "Asha"})
    ours = _minter().mint(TokenRequest(room="r", identity="u-2", name="Asha", metadata=metadata,
                                       attributes={"plan": "gold"}))
    theirs = (
        api.AccessToken(KEY, SECRET)
        .with_identity("u-2").with_name("Asha").with_metadata(metadata).with_attributes({"plan": "gold"})
        .with_ttl(datetime.timedelta(seconds=900))
        .with_grants(api.VideoGrants(room_join=True, room="r", can_update_own_metadata=True))
        .with_room_config(api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name="multi-assistant")]))
        .to_jwt()
    )
    decode = lambda t: jwt.decode(t, SECRET, algorithms=["HS256"], issuer=KEY)  # noqa: E731 - a one-line helper local to this test
    a, b = decode(ours), decode(theirs)
    assert abs(a.pop("nbf") - b.pop("nbf")) <= 1 and abs(a.pop("exp") - b.pop("exp")) <= 1
    assert a == b
    assert jwt.get_unverified_header(ours) == jwt.get_unverified_header(theirs)


def test_ttl_and_dispatch_metadata() -> None:
    token = _minter(ttl=120).mint(
        TokenRequest(room="r", identity="i", name="", metadata="", dispatch_metadata='{"k":1}'), now=1_000_000
    )
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False})
    assert raw["exp"] - raw["nbf"] == 120 and raw["nbf"] == 1_000_000
    assert raw["roomConfig"] == {"agents": [{"agentName": "multi-assistant", "metadata": '{"k":1}'}]}
    assert "name" not in raw and "metadata" not in raw


def test_forged_or_expired_tokens_fail_verification() -> None:
    token = _minter().mint(TokenRequest(room="r", identity="i", name="n", metadata=""), now=1_000_000)
    import pytest

    with pytest.raises(jwt.ExpiredSignatureError):
        api.TokenVerifier(KEY, SECRET).verify(token)
    fresh = _minter().mint(TokenRequest(room="r", identity="i", name="n", metadata=""))
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(KEY, "another-secret-" * 3).verify(fresh)
