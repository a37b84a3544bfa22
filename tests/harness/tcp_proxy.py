"""A TCP proxy between our code and PostgreSQL that can fail the way networks fail.

Modes (switch at any time with `proxy.mode = ...`):

* ``pass``       forward bytes both ways.
* ``refuse``     new connections are closed at once (a server that is down); existing ones are cut.
* ``blackhole``  connections are accepted and kept, but no byte moves either way (a partition:
                 the peer neither answers nor resets, so only timeouts and keepalives notice).
* ``cut_after_commit``  forward everything, but when the server answers a COMMIT, drop that reply
                 and cut the client's connection: the transaction is stored, the client never
                 hears so (a lost commit reply). `commits_cut` counts them; `cut_budget` bounds them.

Loopback only; every thread is a daemon and `close()` ends them all.

    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test"
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Literal

Mode = Literal["pass", "refuse", "blackhole", "cut_after_commit"]

# A COMMIT as psycopg sends it: a simple-query ('Q') message whose text is COMMIT.
_COMMIT_QUERY = b"COMMIT\x00"
# The server's answer to it: CommandComplete ('C') with tag COMMIT.
_COMMIT_COMPLETE = b"C\x00\x00\x00\x0bCOMMIT\x00"


class TcpProxy:
    def __init__(self, upstream: tuple[str, int], *, listen_host: str = "127.0.0.1") -> None:
        if not upstream[0].startswith("127.") and upstream[0] not in ("localhost", "::1"):
            raise ValueError("fault tests target loopback only")
        self.upstream = upstream
        self.mode: Mode = "pass"
        self.commits_cut = 0
        self.cut_budget: int | None = None
        self._listener = socket.create_server((listen_host, 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)
        self._thread.start()

    # --- control ---------------------------------------------------------------------

    def set_mode(self, mode: Mode) -> None:
        """Switch mode; `refuse` also cuts the connections that are open (the server went away)."""
        self.mode = mode
        if mode == "refuse":
            self.cut_all()

    def cut_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            _close(client)
            _close(server)

    def close(self) -> None:
        self._closed.set()
        self.cut_all()
        _close(self._listener)
        self._thread.join(timeout=2)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if self.mode == "refuse":
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), name="tcp-proxy-pump", daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        commit_pending = False
        try:
            while not self._closed.is_set():
                if self.mode == "blackhole":
                    time.sleep(0.05)  # hold the bytes where they are: neither side hears anything
                    continue
                try:
                    readable, _, _ = select.select([client, server], [], [], 0.1)
                except (OSError, ValueError):
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if _COMMIT_QUERY in data:
                            commit_pending = True
                        server.sendall(data)
                        continue
                    if (commit_pending and self.mode == "cut_after_commit" and _COMMIT_COMPLETE in data
                            and (self.cut_budget is None or self.commits_cut < self.cut_budget)):
                        self.commits_cut += 1
                        return  # the server has committed; the client never gets the reply
                    if _COMMIT_COMPLETE in data:
                        commit_pending = False
                    client.sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                if (client, server) in self._pairs:
                    self._pairs.remove((client, server))
            _close(client)
            _close(server)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


__all__ = ["Mode", "TcpProxy"]
