"""A local HTTP server on 127.0.0.1 that serves weights files to the fetch code, counts requests, and
can cut a response off midway: the network the tests never leave."""
from __future__ import annotations

import http.server
import threading
from pathlib import Path


class WeightsServer:
    """Serves the files of ``folder``; ``cut_after`` bytes (when set) are sent of a file before the
    connection drops although its Content-Length promised all of it."""

    def __init__(self, folder: Path):
        self.folder, self.requests, self.cut_after = folder, [], None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                path = server.folder / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data if server.cut_after is None else data[:server.cut_after])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "WeightsServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
