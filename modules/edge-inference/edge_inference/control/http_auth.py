"""The API keys of the HTTP servers (HTTP_API_KEY on the REST API and the live page, METRICS_API_KEY on /metrics),
and the TLS context of the REST API (HTTP_TLS_CERT / HTTP_TLS_KEY).

A request carries the key as `Authorization: Bearer <key>` (API clients) or as Basic auth with any user name and
the key as password (what a browser's prompt sends). Keys are compared in constant time (`hmac.compare_digest` on
their bytes). A refusal is 401 with a JSON body and two challenges, `Bearer` and `Basic` (a browser shows its
login prompt for the second). Neither the key nor what a client sent is ever logged or put in a body.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from pathlib import Path

REALM = "edge-inference"
CHALLENGES = (f'Bearer realm="{REALM}"', f'Basic realm="{REALM}", charset="UTF-8"')


class ApiKey:
    """One key (empty: nothing asked). `allows(authorization_header)` says whether a request may pass."""

    def __init__(self, key: str, setting: str) -> None:
        self._key = key.encode("utf-8")
        self.setting = setting

    def __repr__(self) -> str:  # never the key
        return f"ApiKey({self.setting}, {'set' if self._key else 'not set'})"

    @property
    def required(self) -> bool:
        return bool(self._key)

    def allows(self, authorization: str | None) -> bool:
        if not self._key:
            return True
        presented = presented_key(authorization)
        return presented is not None and hmac.compare_digest(presented, self._key)

    def refusal(self, sent: bool) -> tuple[str, str]:
        """(code, message) of the 401: what to send, without saying anything of the key."""
        how = f"Authorization: Bearer <{self.setting}>, or Basic auth with any user name and the key as password"
        if sent:
            return "unauthorized", f"the credentials sent are not the {self.setting}; send {how}"
        return "unauthorized", f"this endpoint needs the {self.setting}: send {how}"


def presented_key(authorization: str | None) -> bytes | None:
    """The key a request presents in its Authorization header (Bearer token, or Basic password), else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value.encode("utf-8", "replace")
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
        _user, colon, password = decoded.partition(b":")
        return password if colon else None
    return None


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """The server-side TLS context for HTTPS (TLS 1.2 or newer), or None for plain HTTP. Raises ValueError with
    one sentence when the files cannot be used (never their contents)."""
    if cert is None or key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
        raise ValueError(
            f"HTTP_TLS_CERT / HTTP_TLS_KEY ({cert}, {key}) cannot be used: {reason}; expected a PEM certificate "
            "chain and its PEM private key (unencrypted)"
        ) from None
    return context
