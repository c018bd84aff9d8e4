"""HTTP bridge server for the simulated microscope: temscript's v1 API, threaded, with fault injection.

The HTTP layer is temscript's own (``temscript.server.MicroscopeServer`` and ``MicroscopeHandler``), so
``temscript.RemoteMicroscope`` drives the simulator unchanged. Additions: one thread per request
(the stage can be polled while an acquisition runs), every request logged to the microscope's
``requests`` list when it has one, the faults of
:class:`tiltstream.simulator.faults.FaultInjector` applied before a request is served, quiet logging, and
:func:`running_server` for tests (port 0, waits until listening, stops and joins on exit, re-raises
errors of the server thread).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

from temscript.base_microscope import BaseMicroscope
from temscript.server import MicroscopeHandler, MicroscopeServer

from tiltstream.simulator.faults import FaultInjector

log = logging.getLogger(__name__)


class FaultingHandler(MicroscopeHandler):
    """temscript's request handler, preceded by the microscope's injected faults; logs to ``logging``."""

    def _apply_fault(self) -> bool:
        """Apply the due fault; True when the request has been dealt with (error sent or dropped)."""
        faults: FaultInjector | None = getattr(self.server.microscope, "faults", None)
        if faults is None:
            return False
        path = urlparse(self.path).path
        endpoint = path[4:] if path.startswith("/v1/") else path
        fault = faults.take(endpoint)
        if fault.delay_s > 0:
            time.sleep(fault.delay_s)
        if fault.kind == "error":
            if self.command == "PUT":  # consume the body so the connection stays usable
                self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            self.send_error(fault.status, f"injected fault on {endpoint}")
            return True
        if fault.kind == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return True
        return False

    def _log_request(self) -> None:
        """Append (method, endpoint) to the microscope's ``requests`` log, when it keeps one."""
        log_list = getattr(self.server.microscope, "requests", None)
        if log_list is not None:
            path = urlparse(self.path).path
            log_list.append((self.command, path[4:] if path.startswith("/v1/") else path))

    def do_GET(self) -> None:
        self._log_request()
        if not self._apply_fault():
            super().do_GET()

    def do_PUT(self) -> None:
        self._log_request()
        if not self._apply_fault():
            super().do_PUT()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        log.debug("%s %s", self.address_string(), format % args)


class SimulatorServer(socketserver.ThreadingMixIn, MicroscopeServer):
    """``MicroscopeServer`` answering each request in its own thread (joined on close), with :class:`FaultingHandler`.

    Parameters
    ----------
    server_address
        ``(host, port)``; port 0 picks a free port (see ``server_address`` after binding).
    microscope
        The backend (a temscript ``BaseMicroscope``, e.g. :class:`tiltstream.simulator.microscope.SimulatedMicroscope`).
    """

    daemon_threads = False  # tracked, so that server_close joins them (block_on_close):
    block_on_close = True  # nothing is left running after the server is closed

    def __init__(self, server_address: tuple[str, int], microscope: BaseMicroscope) -> None:
        super().__init__(server_address, microscope_factory=lambda: microscope,
                         allow_column_valves_open=False)
        self.RequestHandlerClass = FaultingHandler
        self.errors: list[BaseException] = []

    def handle_error(self, request, client_address) -> None:
        """Keep errors that escaped a handler (not a client hanging up) to re-raise in the test thread."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        log.error("error serving %s: %r", client_address, exc)
        if exc is not None:
            self.errors.append(exc)


@contextlib.contextmanager
def running_server(microscope: BaseMicroscope, host: str = "127.0.0.1", port: int = 0,
                   join_timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``microscope`` in a background thread for the duration of a ``with`` block.

    Yields the base URL ``http://HOST:PORT``; the server is listening when it is yielded. On exit the
    server is shut down, its socket closed and its thread joined; an error raised in the serving thread
    (or escaping a request handler) is re-raised here.

    Raises
    ------
    OSError
        The address cannot be bound (e.g. the port is in use).
    RuntimeError
        The server thread did not stop within ``join_timeout_s`` seconds.
    """
    server = SimulatorServer((host, port), microscope)
    thread_errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever(poll_interval=0.05)
        except BaseException as exc:  # re-raised in the caller's thread
            thread_errors.append(exc)

    thread = threading.Thread(target=serve, name=f"sim-bridge-{server.server_address[1]}", daemon=True)
    thread.start()
    bound_host, bound_port = server.server_address[:2]
    try:
        with socket.create_connection((bound_host, bound_port), timeout=5.0):
            pass  # listening (the socket listens from bind; this proves it accepts)
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(join_timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"simulator bridge thread did not stop within {join_timeout_s} s")
    if thread_errors:
        raise thread_errors[0]
    if server.errors:
        raise server.errors[0]
