"""Where a Redis password comes from: the URL, ``?password_file=PATH`` or the environment.

Keeping the password out of the URL keeps it out of shell history, process lists and
configuration files: ``DTQ_REDIS_PASSWORD`` or a file only the service user can read.
"""

from __future__ import annotations

import os

from dtq_core.errors import ConfigError

#: The environment variable holding the password when the URL carries none.
PASSWORD_ENV = "DTQ_REDIS_PASSWORD"


def password_for(url_password: str | None, password_file: str | None) -> str | None:
    """The password to authenticate with, or ``None`` for none.

    In order: the URL's own (``redis://:PASSWORD@host``), the first line of
    ``password_file``, then ``$DTQ_REDIS_PASSWORD``.

    Raises:
        ConfigError: Two sources given, or a password file that cannot be read or is
            empty (one line naming the file, never its content).
    """
    if password_file is not None:
        if url_password:
            raise ConfigError(
                "the redis URL has a password and a password_file: give only one of them"
            )
        try:
            with open(password_file, encoding="utf-8") as f:
                line = f.readline().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot read the redis password_file {password_file!r}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"the redis password_file {password_file!r} is not UTF-8 text"
            ) from None
        if not line:
            raise ConfigError(
                f"the redis password_file {password_file!r} is empty: write the password "
                "on its first line"
            )
        return line
    if url_password:
        return url_password
    return os.environ.get(PASSWORD_ENV) or None
