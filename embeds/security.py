"""The widget's credentials: public keys, the identity secret (encrypted at rest), visitor ids and visitor tokens.

* **Public key** (`pk_...`): names an embed in the snippet. Not a secret.
* **Identity secret** (`ccis_...`): shared with the business's backend, which signs its user ids with it
  (`user_hash = HMAC-SHA256(secret, "<user_ts>:<user_id>")`, hex; `user_ts` in Unix seconds, accepted for
  WIDGET_IDENTITY_MAX_AGE; the bare-user-id legacy form only where the embed allows it). We must compute the
  same HMAC to verify, so the secret is stored encrypted (Fernet: AES-128-CBC + HMAC-SHA256) under a key derived from SECRET_KEY with HKDF — a database dump
  alone does not reveal it; SECRET_KEY_FALLBACKS keep old ciphertexts readable after a SECRET_KEY rotation.
* **Visitor id**: issued by the server, never chosen by the browser, and handed to the frame as a signed
  credential it keeps in its own localStorage. Nobody can present a visitor id they were not given.
* **Visitor token**: short-lived, signed, bound to the workspace (schema), the embed and its current public key, the
  visitor, the host page origin proved at mount time, and the verified user id if any. It authenticates the frame's
  HTTP calls and its WebSocket; every door re-checks that the embed is active, the key current and the origin still
  allowed, so rotating the key, deactivating or removing an origin cuts existing tokens off.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core import signing

PUBLIC_KEY_PREFIX = "pk_"
IDENTITY_SECRET_PREFIX = "ccis_"
MAX_USER_ID_CHARS = 200


def public_key_new() -> str:
    return PUBLIC_KEY_PREFIX + secrets.token_urlsafe(18)


def public_key_plausible(value: str) -> bool:
    """Cheap shape check before any database lookup (keys come from anyone's URL)."""
    return (
        isinstance(value, str) and value.startswith(PUBLIC_KEY_PREFIX) and 10 <= len(value) <= 40
        and all(ch.isalnum() or ch in "-_" for ch in value)
    )


# --- the identity secret -----------------------------------------------------------------------------------------
def _fernet_for(secret_key: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"customercaregpt.embeds", info=b"identity-secret.v1"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


@lru_cache(maxsize=4)
def _fernet(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([_fernet_for(secret_key), *(_fernet_for(key) for key in fallbacks)])


def _box() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ()))


def identity_secret_new() -> str:
    return IDENTITY_SECRET_PREFIX + secrets.token_urlsafe(32)


def identity_secret_encrypt(secret: str) -> str:
    return _box().encrypt(secret.encode()).decode()


def identity_secret_decrypt(ciphertext: str) -> str | None:
    """The secret, or None when it can't be read (SECRET_KEY changed without a fallback)."""
    try:
        return _box().decrypt(ciphertext.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def identity_message(user_id: str, timestamp: int | None = None) -> str:
    """What is signed: `"<unix seconds>:<user_id>"`; the legacy form (no timestamp) is the bare user id."""
    return user_id if timestamp is None else f"{timestamp}:{user_id}"


def identity_hash(secret: str, user_id: str, timestamp: int | None = None) -> str:
    """What the business's backend computes: hex HMAC-SHA256 under the identity secret of `"<timestamp>:<user_id>"`
    (docs/widget.md "Identity verification"), or of the bare user id in the legacy form."""
    return hmac.new(secret.encode(), identity_message(user_id, timestamp).encode(), hashlib.sha256).hexdigest()


def identity_hash_valid(secret: str, user_id: str, user_hash: str, timestamp: int | None = None) -> bool:
    if not isinstance(user_hash, str) or len(user_hash) != 64:
        return False
    return hmac.compare_digest(identity_hash(secret, user_id, timestamp), user_hash.lower())


def identity_timestamp_parse(value: object) -> int | None:
    """Unix seconds as an integer or a string of digits (at most 12); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 10**12 else None
    if isinstance(value, str) and 0 < len(value) <= 12 and value.isascii() and value.isdigit():
        return int(value)
    return None


def user_id_valid(user_id: object) -> bool:
    return (
        isinstance(user_id, str) and 0 < len(user_id) <= MAX_USER_ID_CHARS and user_id == user_id.strip()
        and user_id.isprintable()
    )


# --- visitors ----------------------------------------------------------------------------------------------------
def visitor_id_new() -> str:
    return "v_" + secrets.token_urlsafe(18)


def visitor_credential_issue(*, schema: str, visitor_id: str) -> str:
    return signing.dumps({"v": visitor_id}, salt=f"embeds.visitor:{schema}")


def visitor_credential_read(*, schema: str, credential: object) -> str | None:
    """The visitor id in a credential this workspace issued, or None."""
    if not isinstance(credential, str) or not credential or len(credential) > 400:
        return None
    try:
        data = signing.loads(credential, salt=f"embeds.visitor:{schema}")
    except signing.BadSignature:
        return None
    visitor_id = data.get("v") if isinstance(data, dict) else None
    return visitor_id if isinstance(visitor_id, str) and visitor_id.startswith("v_") else None


@dataclass(frozen=True)
class VisitorClaims:
    """What a visitor token says, after its signature and age were checked."""

    schema: str
    embed_id: int
    public_key: str
    visitor_id: str
    origin: str  # the host page's origin, proved by the browser at mount time (frame-ancestors)
    user_id: str = ""  # set when the host's backend signed the user id (identity verification)

    @property
    def verified(self) -> bool:
        return bool(self.user_id)


class TokenExpired(Exception):
    pass


class TokenInvalid(Exception):
    pass


def visitor_token_issue(claims: VisitorClaims) -> str:
    payload = {"e": claims.embed_id, "k": claims.public_key, "v": claims.visitor_id, "o": claims.origin,
               "u": claims.user_id}
    return signing.dumps(payload, salt=f"embeds.visitor-token:{claims.schema}", compress=True)


def visitor_token_read(*, schema: str, token: object, max_age: float) -> VisitorClaims:
    """The claims of a token issued for this workspace no longer than `max_age` seconds ago; raises TokenInvalid or
    TokenExpired."""
    if not isinstance(token, str) or not token or len(token) > 1000:
        raise TokenInvalid()
    try:
        data = signing.loads(token, salt=f"embeds.visitor-token:{schema}", max_age=max_age)
    except signing.SignatureExpired:
        raise TokenExpired() from None
    except signing.BadSignature:
        raise TokenInvalid() from None
    try:
        return VisitorClaims(
            schema=schema, embed_id=int(data["e"]), public_key=str(data["k"]), visitor_id=str(data["v"]),
            origin=str(data["o"]), user_id=str(data.get("u") or ""),
        )
    except (KeyError, TypeError, ValueError):
        raise TokenInvalid() from None
