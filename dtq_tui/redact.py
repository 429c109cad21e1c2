"""Masking of sensitive arguments (passwords, tokens, keys) and restoring them after an edit."""

from __future__ import annotations

import re
from typing import Any

#: Shown instead of a sensitive value; an edit that keeps it keeps the original value.
REDACTED = "«redacted»"

_SENSITIVE = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[_-]?key|apikey|auth|credential|"
    r"private[_-]?key|cookie|session[_-]?id|signature|ssn|card[_-]?number|cvv",
    re.IGNORECASE,
)


def is_sensitive(key: object) -> bool:
    """Whether a mapping key names a secret."""
    return isinstance(key, str) and bool(_SENSITIVE.search(key))


def redact(value: Any) -> Any:
    """A copy of ``value`` with the values of sensitive keys (at any depth) masked."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_sensitive(k) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def restore(edited: Any, original: Any) -> Any:
    """Put the original secrets back wherever an edit left :data:`REDACTED` in place.

    The editor never shows a secret; an operator who does not touch a masked value keeps
    it, and one who types a new value replaces it.
    """
    if isinstance(edited, str) and edited == REDACTED:
        return original
    if isinstance(edited, dict) and isinstance(original, dict):
        return {k: restore(v, original.get(k)) for k, v in edited.items()}
    if isinstance(edited, list) and isinstance(original, list | tuple):
        return [
            restore(v, original[i] if i < len(original) else None) for i, v in enumerate(edited)
        ]
    return edited
