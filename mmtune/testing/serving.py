"""An mmtune server app (mmtune.infer.server.create_app) running in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from fastapi import FastAPI


@dataclass
class RunningServer:
    url: str  # http://host:port
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Run `app` in a background thread; port 0 picks a free port (tests talk to it as clients do)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))  # bound here, so the port is known before the thread starts and never raced
    from mmtune.infer.http_protocol import protocol_with_header_timeout

    settings = getattr(app.state, "settings", None)  # as `mmtune serve` runs it: with the header deadline
    http = protocol_with_header_timeout(settings.header_timeout_s) if settings is not None else "auto"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, http=http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="mmtune-server", daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the server did not start")
    host_part = f"[{host}]" if ":" in host else host
    return RunningServer(f"http://{host_part}:{sock.getsockname()[1]}", server, thread)
