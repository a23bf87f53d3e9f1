"""A real HTTP server on 127.0.0.1 serving good and bad product images for fetch tests.

Every response is bounded: the slow route sleeps a few seconds, the endless route stops
after 64 MiB or 10 s, so the server always finishes on its own.
"""

from __future__ import annotations

import gzip
import io
import struct
import threading
import time
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def jpeg(size=(120, 160), color=(200, 30, 30), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def png(size=(120, 160), mode="RGB", color=(30, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def webp(size=(120, 160)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 30, 200)).save(buf, "WEBP")
    return buf.getvalue()


def two_halves_jpeg(orientation: int) -> bytes:
    """60x40: left half red, right half blue, with an EXIF orientation tag."""
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 30, 40))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (80, 80), (0, 255, 255, 0)).save(buf, "JPEG", quality=95)  # red in CMYK
    return buf.getvalue()


def bomb_png(width=50_000, height=50_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (generated, never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: with 8 fetches in flight on a loaded machine, a SYN
    # beyond it is dropped and retransmitted after 1 s, past the tests' 1 s connect timeout, so
    # a first attempt could fail before the route saw it (CI: /ratelimited.jpg ended HTTP_4XX).
    request_queue_size = 128


class ImageServer:
    """Start with ``with ImageServer() as server: server.url("/good.jpg")``."""

    def __init__(self):
        self.hits: Counter[str] = Counter()
        self.bodies_sent: Counter[str] = Counter()
        # path -> (ETag or None, Last-Modified or None, body): answered 304 when the request's
        # If-None-Match (or, without an ETag, If-Modified-Since) matches; tests change them between runs.
        self.versioned: dict[str, tuple[str | None, str | None, bytes]] = {}
        self.routes = {
            "/good.jpg": ("image/jpeg", jpeg()),
            "/good.png": ("image/png", png()),
            "/good.webp": ("image/webp", webp()),
            "/alpha.png": ("image/png", png(mode="RGBA", color=(0, 0, 0, 0))),
            "/palette.gif": ("image/gif", self._gif()),
            "/rotated.jpg": ("image/jpeg", two_halves_jpeg(6)),
            "/cmyk.jpg": ("image/jpeg", cmyk_jpeg()),
            "/truncated.jpg": ("image/jpeg", jpeg(size=(400, 400), color=(10, 120, 200))[:1500]),
            "/bomb.png": ("image/png", bomb_png()),
            "/tiny.png": ("image/png", png(size=(8, 8))),
            "/page.html": ("text/html", b"<html><body>Not found, but 200 OK</body></html>"),
            "/lying.jpg": ("image/jpeg", b"GIF? no: just some text pretending to be a JPEG"),
        }
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @staticmethod
    def _gif() -> bytes:
        buf = io.BytesIO()
        Image.new("P", (64, 64), 3).save(buf, "GIF")
        return buf.getvalue()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes = b"", ctype: str = "image/jpeg", headers: dict = ()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for key, value in dict(headers).items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    # Counted before it is written: once the client holds the body, the count has it.
                    server.bodies_sent[self.path] += 1
                    try:
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the client gave up (timeout tests)

            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path
                server.hits[path] += 1
                hits = server.hits[path]
                if path in server.routes:
                    ctype, body = server.routes[path]
                    return self._send(200, body, ctype)
                if path in server.versioned:
                    return self._versioned(*server.versioned[path])
                if path == "/missing.jpg":
                    return self._send(404, b"no", "text/plain")
                if path == "/flaky.jpg":  # 500 once, then the image
                    return self._send(500, b"oops", "text/plain") if hits == 1 else self._send(200, jpeg())
                if path == "/always500.jpg":
                    return self._send(503, b"down", "text/plain")
                if path == "/ratelimited.jpg":  # 429 with Retry-After once, then the image
                    if hits == 1:
                        return self._send(429, b"slow down", "text/plain", {"Retry-After": "1"})
                    return self._send(200, jpeg())
                if path == "/slow.jpg":
                    time.sleep(3)
                    return self._send(200, jpeg())
                if path == "/endless.jpg":
                    return self._endless()
                if path == "/drip.jpg":
                    return self._drip()
                if path == "/gzip.jpg":  # Content-Encoding: gzip, decoded by the client
                    body = jpeg(color=(7, 8, 9))
                    return self._send(200, gzip.compress(body), "image/jpeg", {"Content-Encoding": "gzip"})
                if path == "/etag.jpg":
                    if self.headers.get("If-None-Match") == '"v1"':
                        return self._send(304, b"", "image/jpeg", {"ETag": '"v1"'})
                    return self._send(200, jpeg(color=(1, 2, 3)), "image/jpeg", {"ETag": '"v1"'})
                if path == "/to-ftp.jpg":
                    return self._send(302, b"", "text/plain", {"Location": "ftp://example.com/x.jpg"})
                if path == "/to-private.jpg":
                    return self._send(302, b"", "text/plain", {"Location": "http://10.1.2.3/x.jpg"})
                if path == "/to-metadata.jpg":
                    return self._send(302, b"", "text/plain", {"Location": "http://169.254.169.254/latest"})
                if path == "/to-good.jpg":
                    return self._send(301, b"", "text/plain", {"Location": "/good.jpg"})
                if path == "/loop.jpg":
                    return self._send(302, b"", "text/plain", {"Location": "/loop.jpg"})
                return self._send(404, b"unknown route", "text/plain")

            def _versioned(self, etag, last_modified, body):
                headers = {k: v for k, v in (("ETag", etag), ("Last-Modified", last_modified)) if v}
                if etag and self.headers.get("If-None-Match") == etag or (
                        not etag and last_modified and self.headers.get("If-Modified-Since") == last_modified):
                    return self._send(304, b"", "image/jpeg", headers)
                return self._send(200, body, "image/jpeg", headers)

            def _drip(self):
                """A byte every 0.2 s (each well within a read timeout), 40 bytes: 8 s in all."""
                body = jpeg()[:40]
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i:i + 1])
                        self.wfile.flush()
                        time.sleep(0.2)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _endless(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = jpeg()[:2] + b"\x00" * 65534
                deadline, sent = time.monotonic() + 10, 0
                try:
                    while sent < 64 * 1024 * 1024 and time.monotonic() < deadline:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        sent += len(chunk)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
