"""An HTTP server on a free loopback port, run in a thread of the test process, that can be
stopped completely.

Why not plain `ThreadingHTTPServer.shutdown()`: that only ends the accept loop. Handler threads
parked on an idle keep-alive connection (clients under test pool connections) would live on,
and a stalled handler would keep sleeping. `stop()` here also closes every open client
connection, wakes stalled handlers (`stopping` event) and joins every thread it started.
"""

from __future__ import annotations

import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TrackedServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that remembers its connections and joins its handler threads."""

    daemon_threads = False
    block_on_close = True  # server_close() joins handler threads

    def __init__(self, handler: type[BaseHTTPRequestHandler], ssl_context: ssl.SSLContext | None = None,
                 idle_timeout: float = 30.0):
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)

    def finish_request(self, request, client_address) -> None:
        """Runs in the handler thread: the TLS handshake happens here, not in the accept loop,
        so a client that never finishes it blocks only its own thread."""
        conn = request
        try:
            request.settimeout(self.idle_timeout)
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(request, server_side=True)
            with self._conns_lock:
                if self.stopping.is_set():
                    return
                self._conns.add(conn)
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, ssl.SSLError):
            pass  # a client that went away, or a failed handshake: nothing to answer
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            if conn is not request:
                conn.close()

    def handle_error(self, request, client_address) -> None:
        """Connection resets are part of the tests (dropped connections): keep stderr quiet."""

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class BackgroundServer:
    """Owns a TrackedServer and the thread that runs its accept loop."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], ssl_context: ssl.SSLContext | None = None,
                 idle_timeout: float = 30.0):
        self.server = TrackedServer(handler, ssl_context, idle_timeout)
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{handler.__name__}-{self.port}", daemon=True)

    @property
    def stopping(self) -> threading.Event:
        return self.server.stopping

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting, close every client connection, wake stalls, join all threads."""
        self.server.stopping.set()
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join()
        self.server.close_connections()
        self.server.server_close()
