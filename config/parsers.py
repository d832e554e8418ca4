"""Request parsers that refuse text PostgreSQL cannot store, before any view sees it.

PostgreSQL text and jsonb cannot hold NUL (U+0000), and UTF-8 cannot encode an unpaired surrogate (JSON allows
both as `\\u0000` / `\\ud800`). Left in, they fail deep inside an INSERT as a database error. These parsers answer
400 `malformed_request` instead, naming the offending field.
"""
from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser

_MAX_DEPTH = 64


def unstorable_text(value: str) -> bool:
    if "\x00" in value:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check(value: Any, path: str = "", depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise ParseError("The request body is nested too deeply.")
    if isinstance(value, str):
        if unstorable_text(value):
            raise ParseError(f"Text may not contain NUL characters or unpaired surrogates ({path or 'body'}).")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and unstorable_text(key):
                raise ParseError(f"Field names may not contain NUL characters or unpaired surrogates ({path or 'body'}).")
            _check(item, name, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1)


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        data = super().parse(stream, media_type, parser_context)
        _check(data)
        return data


class StrictFormParser(FormParser):
    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        data = super().parse(stream, media_type, parser_context)
        _check({key: data.getlist(key) for key in data})
        return data


class StrictMultiPartParser(MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):  # type: ignore[no-untyped-def]
        result = super().parse(stream, media_type, parser_context)
        _check({key: result.data.getlist(key) for key in result.data})
        for key in result.files:
            for upload in result.files.getlist(key):
                _check(upload.name or "", f"{key}.filename")
        return result
