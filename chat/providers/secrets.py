"""Vendor API keys at rest: AssistantSettings.providers never holds a plain `api_key` in the database.

Each entry's `api_key` is stored as `fernet:<token>` (Fernet: AES-128-CBC + HMAC-SHA256, from the `cryptography`
package) next to an `api_key_hint` ("sk-…abcd") that pages may show. `chat.models.ProvidersField` encrypts on
every write (save, update, admin) and leaves the token as it is on read; only `provider_config_parse` — building a
provider to call the vendor — decrypts. Entries that were never saved (built in memory) may hold a plain key; they
pass through.

The key is `settings.FIELD_ENCRYPTION_KEY`: production refuses to start without it; local and test derive one from
SECRET_KEY. Several keys, comma-separated, rotate: the first encrypts, every one decrypts (MultiFernet).
"""
from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "fernet:"
SECRET_FIELDS = ("api_key",)


def _derived_key(secret_key: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(f"field-encryption:{secret_key}".encode()).digest())


@lru_cache(maxsize=4)
def _fernet(configured: str, secret_key: str) -> MultiFernet:
    keys = [part.strip() for part in configured.split(",") if part.strip()]
    if not keys:
        if not secret_key:
            raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY (or at least SECRET_KEY) must be set")
        return MultiFernet([Fernet(_derived_key(secret_key))])
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64-encoded bytes; "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)"
        ) from exc


def field_cipher() -> MultiFernet:
    return _fernet(getattr(settings, "FIELD_ENCRYPTION_KEY", "") or "", settings.SECRET_KEY or "")


def secret_is_encrypted(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def secret_encrypt(plain: str) -> str:
    return PREFIX + field_cipher().encrypt(plain.encode()).decode()


def secret_decrypt(value: str) -> str:
    """The plain secret; a value that was never encrypted (an unsaved entry) is returned as it is. Raises ValueError
    when the token can't be read with the configured keys (a rotated-away key, a damaged value)."""
    if not secret_is_encrypted(value):
        return value
    try:
        return field_cipher().decrypt(value[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise ValueError("the stored API key can't be decrypted with FIELD_ENCRYPTION_KEY") from None


def secret_hint(plain: str) -> str:
    """What a page may show of a key: its vendor prefix and last four characters ("sk-…abcd"), less when short."""
    plain = plain.strip()
    if len(plain) < 12:
        return "…" if plain else ""
    prefix = plain.split("-", 1)[0] + "-" if "-" in plain[:8] else ""
    return f"{prefix}…{plain[-4:]}"


def providers_encrypt(entries: Any) -> Any:
    """The chain as it is stored: every plain secret encrypted, with its hint. Idempotent; non-lists pass through."""
    if not isinstance(entries, list):
        return entries
    stored = []
    for entry in entries:
        if isinstance(entry, dict):
            entry = dict(entry)
            for name in SECRET_FIELDS:
                value = entry.get(name)
                if isinstance(value, str) and value and not secret_is_encrypted(value):
                    entry[name] = secret_encrypt(value)
                    entry[f"{name}_hint"] = secret_hint(value)
        stored.append(entry)
    return stored


def providers_public(entries: Any) -> list[Any]:
    """The chain as pages and APIs may show it: secrets replaced by their hints."""
    shown = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            entry = {k: v for k, v in entry.items() if k not in SECRET_FIELDS}
            for name in SECRET_FIELDS:
                entry.setdefault(f"{name}_hint", "")
        shown.append(entry)
    return shown

