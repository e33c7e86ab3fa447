"""Who is calling the token service.

``none``: anyone (local development; a warning is logged at start). ``jwt``: a bearer token issued by the
app's own auth (HS256 shared secret or keys from a JWKS URL), with audience and issuer checked when set.
The participant identity is the token's ``sub``, so a caller can only ever get a LiveKit token for itself.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import jwt

from gocare_voice.settings import AuthMode, Settings
from gocare_voice.token_service.errors import ApiError

log = logging.getLogger("gocare.token_service.auth")

_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_ALGORITHMS_BY_KEY: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("RSA", None): _RSA,
    ("EC", "P-256"): ("ES256",), ("EC", "P-384"): ("ES384",), ("EC", "P-521"): ("ES512",),
    ("OKP", "Ed25519"): ("EdDSA",), ("OKP", "Ed448"): ("EdDSA",),
}
"""The JWS algorithms each JWKS key type can verify. The token's header names the algorithm; handing PyJWT
every asymmetric algorithm for any key let an ``ES256`` header on an RSA key reach the crypto library, which
raised ``TypeError`` (a 500 and two tracebacks). Only algorithms of the key's own family are tried, and a
JWK that pins ``alg`` allows just that one."""


def algorithms_for_key(jwk: dict[str, Any]) -> tuple[str, ...]:
    """What a JWK from the JWKS may verify; empty for key types we do not accept (``oct``, unknown)."""
    kty = jwk.get("kty")
    crv = jwk.get("crv") if kty != "RSA" else None
    family = _ALGORITHMS_BY_KEY.get((kty, crv) if isinstance(kty, str) and (crv is None or isinstance(crv, str))
                                    else ("", None), ())
    pinned = jwk.get("alg")
    if pinned is not None:
        return (pinned,) if pinned in family else ()
    return family


@dataclass(frozen=True, slots=True)
class Caller:
    """``subject`` is None when authentication is off; ``rate_key`` identifies the caller for rate limits."""

    subject: str | None
    name: str | None
    rate_key: str


def _unauthorized(detail: str, reason: str) -> ApiError:
    """``reason``: one fixed word per kind of failure, for the auth-failure metric."""
    return ApiError(401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                    reason=reason)


def _keys_unavailable() -> ApiError:
    return ApiError(503, "auth_unavailable", "the signing keys could not be fetched; try again",
                    reason="keys_unavailable")


class Authenticator:
    def __init__(self, *, settings: Settings) -> None:
        self._mode = settings.auth_mode
        self._secret = settings.auth_jwt_secret.get_secret_value() if settings.auth_jwt_secret else None
        self._audience = settings.auth_audience
        self._issuer = settings.auth_issuer
        self._name_claim = settings.auth_name_claim
        self._leeway = settings.auth_leeway  # the app's and our clocks may differ a little
        self._jwks = jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=True, timeout=5) if (
            settings.auth_jwks_url and not self._secret
        ) else None

    async def authenticate(self, *, authorization: str | None, client_host: str | None) -> Caller:
        if self._mode is AuthMode.none:
            return Caller(subject=None, name=None, rate_key=f"ip:{client_host or 'unknown'}")
        if not authorization:
            raise _unauthorized("missing 'Authorization: Bearer <token>' header", "missing")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'", "malformed")
        claims = await self._decode(token.strip())
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip():
            raise _unauthorized("the token has no 'sub' claim", "no_subject")
        name = claims.get(self._name_claim)
        return Caller(subject=subject, name=name if isinstance(name, str) and name.strip() else None,
                      rate_key=f"sub:{subject}")

    async def _decode(self, token: str) -> dict[str, Any]:
        options = {"require": ["exp", "sub"], "verify_aud": self._audience is not None}
        kwargs: dict[str, Any] = {"options": options, "leeway": self._leeway}
        if self._audience is not None:
            kwargs["audience"] = self._audience
        if self._issuer is not None:
            kwargs["issuer"] = self._issuer
        try:
            if self._secret is not None:
                return jwt.decode(token, self._secret, algorithms=["HS256"], **kwargs)
            assert self._jwks is not None
            # PyJWKClient fetches (and caches) keys with blocking I/O: keep it off the event loop.
            key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            allowed = algorithms_for_key(key._jwk_data)  # noqa: SLF001 - PyJWK keeps the JWK only there
            if jwt.get_unverified_header(token).get("alg") not in allowed:
                raise _unauthorized("the token's algorithm does not fit its signing key", "algorithm")
            return jwt.decode(token, key.key, algorithms=list(allowed), **kwargs)
        except ApiError:
            raise
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired", "expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized("the token is not valid yet (nbf/iat in the future; check the clocks)", "not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("the token is not meant for this service (audience)", "audience") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized("the token was issued by someone else (issuer)", "issuer") from None
        except jwt.PyJWKClientConnectionError:
            log.warning("JWKS endpoint unreachable; refusing the request")
            raise _keys_unavailable() from None
        except jwt.PyJWKSetError:
            log.warning("JWKS endpoint answered no usable keys; refusing the request")
            raise _keys_unavailable() from None
        except jwt.PyJWKClientError as error:
            if "did not return a JSON object" in str(error):
                log.warning("JWKS endpoint answered something other than a JSON object; refusing the request")
                raise _keys_unavailable() from None
            raise _unauthorized(f"no signing key for this token ({error.__class__.__name__})", "no_key") from None
        except jwt.MissingRequiredClaimError as error:
            raise _unauthorized(f"the token lacks the '{error.claim}' claim", "missing_claim") from None
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
            # InvalidTokenError, and what a crafted header can still shake out of PyJWT or the crypto
            # library: the token is bad, whatever failed first; never a 500 and a traceback per request
            raise _unauthorized("the token is not valid (bad signature or format)", "invalid") from None
