"""A local file server for the download tests (weights, taggers): files over HTTP on 127.0.0.1,
with Range requests and a dropped connection on demand, and a port nothing listens on."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator


class ServedFiles:
    """What `serve_files` serves and what it saw.

    content: URL path ("/name") -> bytes. ranges: honour Range requests (206) or ignore them (200).
    truncate_at: stop sending after this many bytes of the file (then close), to simulate a
    dropped connection. requests: (path, Range header or None) of every GET.
    """

    def __init__(self, content: dict[str, bytes] | None = None) -> None:
        self.content: dict[str, bytes] = dict(content or {})
        self.ranges = True
        self.truncate_at: int | None = None
        self.requests: list[tuple[str, str | None]] = []


@contextlib.contextmanager
def serve_files(files: ServedFiles) -> Iterator[str]:
    """Serve `files` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
            return

        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            header = self.headers.get("Range")
            files.requests.append((self.path, header))
            data = files.content.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            if header and files.ranges:
                start = int(header.removeprefix("bytes=").split("-")[0])
                if start >= len(data):
                    self.send_error(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if files.truncate_at is not None and files.truncate_at < len(data):
                self.wfile.write(body[: max(0, files.truncate_at - start)])
                self.close_connection = True
                return
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

