"""A local HTTP server on 127.0.0.1 for the download tests (no test touches the network): it serves files from
a dict, honours ``Range`` (206) unless told not to, can cut a response short, and records every request."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from contextlib import contextmanager


class LocalServer:
    """``files``: path (without the leading /) -> bytes. ``cut``: path -> the number of bytes sent before the
    connection is closed (the response still declares the whole length). ``no_range``: paths served whole
    whatever ``Range`` asks."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.no_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.base = ""

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@contextmanager
def local_server() -> Iterator[LocalServer]:
    state = LocalServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            state.requests.append((name, rng))
            data = state.files.get(name)
            if data is None:
                self.send_error(404, "Not Found")
                return
            start = 0
            if rng and name not in state.no_range and rng.startswith("bytes="):
                start = int(rng[len("bytes="):].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if name in state.cut:
                self.wfile.write(body[: max(0, state.cut[name] - start)])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
