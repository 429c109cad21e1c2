"""Secrets kept out of every output: backend URLs and sensitive task arguments.

One policy serves every face: the Console API's record and snapshot views, so the
console, ``dtq``, the embedded owner's socket and logs all show the same safe text.

- :func:`redact_url` replaces a URL's password (``redis://:***@host:6379/0``) and the
  values of secret-looking query options (``?password=...``).
- :class:`Redactor` masks the values of sensitive keys in task arguments, results and
  edits, at any depth; a task sent with ``redact_args`` (``@task(redact_args=True)``)
  has its positional arguments masked too. The key names are :data:`REDACT_KEYS` plus
  ``BrokerConfig(redact=...)``, matched case-insensitively as parts of a key
  (``db_password``, ``X-Api-Key``, ``cardToken``).

Raw values reach only code that asks for them by reading the store itself (replay,
which also puts back every masked value an edit left untouched: :func:`restore`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

if TYPE_CHECKING:
    from dtq_core.task import TaskRecord

#: Shown instead of a sensitive value; an edit that keeps it keeps the original value.
REDACTED = "«redacted»"
#: Shown instead of a URL's password.
MASK = "***"

#: Argument key names masked by default (parts of a key, any case, ``_``/``-`` ignored).
REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "cookie",
    "session_id",
    "signature",
    "ssn",
    "card_number",
    "cvv",
)

#: URL query options whose value is masked (besides any key :data:`REDACT_KEYS` names).
_URL_SECRETS = ("password", "pass", "pwd", "secret", "token")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values masked; other text unchanged.

    Handles ``user:password@`` and ``:password@`` forms (``redis``, ``rediss``,
    ``redis+cluster`` and any other scheme), several hosts, and query options such as
    ``password=`` or ``ssl_password=``. Never raises.

    Example:
        >>> redact_url("redis://:hunter2@db:6379/0?prefix=app")
        'redis://:***@db:6379/0?prefix=app'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch)
        if i != -1:
            end = min(end, i)
    netloc, tail = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hosts}" if colon else netloc
    path, qmark, query = tail.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        parts = []
        for k, v in parse_qsl(query, keep_blank_values=True):
            secret = _is_secret_option(k)
            parts.append(f"{quote(k)}={MASK if secret and v else quote(v, safe='/:,.')}")
        tail = f"{path}?{'&'.join(parts)}{hash_}{fragment}"
    return f"{scheme}://{netloc}{tail}"


def _is_secret_option(key: str) -> bool:
    k = _norm(key)
    if k.endswith("file") or k.endswith("path"):  # where a secret is, not the secret
        return False
    return any(s in k for s in _URL_SECRETS) or any(_norm(s) in k for s in REDACT_KEYS)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL in it redacted and each of ``secrets`` replaced by ``***``.

    For error messages and log lines that may quote a URL or a server's reply that
    echoes a password (Redis answers ``AUTH <password> called without...``).
    """
    out = _URL.sub(lambda m: redact_url(m.group(0)), text)
    for s in secrets:
        if s:
            out = out.replace(s, MASK)
    return out


class Redactor:
    """The argument-masking policy of one broker.

    Args:
        keys: Key names masked besides :data:`REDACT_KEYS` (``BrokerConfig.redact``).
        positional: Task names whose positional arguments are masked whatever the
            message says (tasks registered here with ``redact_args=True``).
    """

    def __init__(self, keys: Iterable[str] = (), positional: Iterable[str] = ()) -> None:
        self.keys = tuple(dict.fromkeys((*REDACT_KEYS, *keys)))
        self._parts = tuple(dict.fromkeys(_norm(k) for k in self.keys if _norm(k)))
        self.positional = frozenset(positional)

    def is_sensitive(self, key: object) -> bool:
        """Whether a mapping key names a secret."""
        if not isinstance(key, str):
            return False
        k = _norm(key)
        return any(p in k for p in self._parts)

    def value(self, value: Any) -> Any:
        """A copy of ``value`` with the values of sensitive keys (at any depth) masked."""
        if isinstance(value, dict):
            return {
                k: (REDACTED if self.is_sensitive(k) and v is not None else self.value(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def args(self, args: Any, masked: bool) -> Any:
        """Positional arguments: each one masked when ``masked``, else :meth:`value`."""
        if masked and isinstance(args, list | tuple):
            return [REDACTED if a is not None else None for a in args]
        return self.value(args)

    def masks_positional(self, name: str, opts: dict[str, Any]) -> bool:
        """Whether task ``name``'s positional arguments are masked."""
        return bool(opts.get("redact_args")) or name in self.positional

    def record(self, rec: TaskRecord) -> TaskRecord:
        """A copy of ``rec`` whose arguments, result and edits are masked.

        The payload is re-encoded with the masked arguments (a view, never stored); a
        payload that does not decode is left as it is (nothing in it can be read).
        """
        from dtq_core.codec import decode_message, encode_message
        from dtq_core.errors import SerializationError

        changes: dict[str, Any] = {}
        masked = rec.name in self.positional
        try:
            msg = decode_message(rec.payload)
        except SerializationError:
            msg = None
        if msg is not None:
            opts = msg.get("opts") or {}
            masked = self.masks_positional(rec.name, opts)
            changes["payload"] = encode_message(
                rec.id,
                rec.name,
                self.args(msg["args"], masked),
                self.value(msg["kwargs"]),
                opts,
            )
        if rec.result is not None:
            changes["result"] = self.value(rec.result)
        if rec.edits:
            changes["edits"] = tuple(self.edit(e, masked) for e in rec.edits)
        return rec.replace(**changes) if changes else rec

    def edit(self, edit: dict[str, Any], masked: bool = False) -> dict[str, Any]:
        """One recorded argument edit with its old and new arguments masked."""
        out = dict(edit)
        for key in ("args", "old_args"):
            if key in out:
                out[key] = self.args(out[key], masked)
        for key in ("kwargs", "old_kwargs"):
            if key in out:
                out[key] = self.value(out[key])
        return out


def restore(edited: Any, original: Any) -> Any:
    """Put the original values back wherever an edit left :data:`REDACTED` in place.

    Views never show a secret; an operator who does not touch a masked value keeps it,
    and one who types a new value replaces it.
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


#: The policy with the default key names only.
DEFAULT = Redactor()

__all__ = [
    "DEFAULT",
    "MASK",
    "REDACTED",
    "REDACT_KEYS",
    "Redactor",
    "redact_text",
    "redact_url",
    "restore",
]
