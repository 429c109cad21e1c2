"""A TCP proxy in front of a redis-server that can lose one reply on purpose.

:meth:`CutProxy.cut_next` arms it: the next request containing a marker (e.g.
``EVALSHA``) is forwarded to the server, which executes it, but its reply is dropped and
the client's connection closed, as when a network path or a server dies between the
two. Every other byte is passed through unchanged.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class CutProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._marker: bytes | None = None
        self._lock = threading.Lock()
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next(self, marker: bytes) -> None:
        """Drop the reply to the next request containing ``marker``."""
        with self._lock:
            self._marker = marker

    def close(self) -> None:
        """Stop accepting (open connections die with their peers)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            state = {"cut": False}
            threading.Thread(target=self._up, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, state), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    if self._marker is not None and self._marker in data:
                        self._marker = None
                        state["cut"] = True
                        self.cuts += 1
                server.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _down(self, server: socket.socket, client: socket.socket, state: dict[str, bool]) -> None:
        try:
            while data := server.recv(65536):
                if state["cut"]:
                    break  # the reply is lost
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(client, server)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            s.close()
