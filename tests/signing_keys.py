"""Bot Framework-style JWTs signed with keys made in the test, and botbuilder told to trust them.

botbuilder fetches the channel's signing keys from login.botframework.com; tests have no network,
so `trust(monkeypatch, key)` puts a key set into botbuilder's own metadata cache instead. Every
other step of the validation (issuer, audience, signature, endorsements, service URL) is the
real one.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import jwt
from botframework.connector.auth import AuthenticationConstants
from botframework.connector.auth.jwt_token_extractor import JwtTokenExtractor, _OpenIdMetadata
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CHANNEL_ISSUER = "https://api.botframework.com"


class SigningKey:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        key = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**key, "kid": self.kid, "use": "sig", "endorsements": ["msteams"]}

    def token(self, *, audience: str, service_url: str, issuer: str = CHANNEL_ISSUER, kid: str | None = None) -> str:
        now = int(time.time())
        claims = {"iss": issuer, "aud": audience, "serviceurl": service_url, "nbf": now - 60, "exp": now + 3600}
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": kid or self.kid})


def trust(monkeypatch, *keys: SigningKey) -> None:
    metadata = _OpenIdMetadata(AuthenticationConstants.TO_BOT_FROM_CHANNEL_OPENID_METADATA_URL)
    metadata.keys = [k.jwk() for k in keys]
    metadata.last_updated = datetime.now()
    monkeypatch.setitem(JwtTokenExtractor.metadataCache, metadata.url, metadata)
