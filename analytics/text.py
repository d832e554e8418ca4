"""Question text as analytics groups it: equal after normalising (case, spacing, trailing punctuation)."""
from __future__ import annotations

import hashlib
import re

_SPACE = re.compile(r"\s+")
QUESTION_TEXT_MAX = 1000


def question_normalise(text: str) -> str:
    return _SPACE.sub(" ", text or "").strip().rstrip("?!.。？！ ").lower()


def question_hash(text: str) -> str:
    normalised = question_normalise(text)
    return hashlib.sha1(normalised.encode()).hexdigest() if normalised else ""
