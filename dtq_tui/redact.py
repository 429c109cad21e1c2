"""The engine's argument-masking policy, as the console's dialogs use it.

Records reach the console already masked by the engine (:mod:`dtq_core.redact`, one
policy for every face); masking again here is a no-op kept for values the console
builds itself (previews of an edit), and :func:`restore` keeps untouched secrets.
"""

from __future__ import annotations

from dtq_core.redact import DEFAULT, REDACTED, restore

#: A copy of a value with the values of sensitive keys (at any depth) masked.
redact = DEFAULT.value
#: Whether a mapping key names a secret.
is_sensitive = DEFAULT.is_sensitive

__all__ = ["REDACTED", "is_sensitive", "redact", "restore"]
