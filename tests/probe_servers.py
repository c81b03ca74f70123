"""Small scripted servers on 127.0.0.1 for the shims' probe tests (Python and native).

`ScriptedServer(mode)` answers every connection the same way, in a thread, and records each
request's first line: "hit" (200, optionally with X-Withcache-Origin-Headers), "miss" (404),
"garbage" (bytes that are not HTTP), "redirect" (302), "hang" (accepts, reads, never answers),
"close" (accepts and closes at once). `closed_port()` is a port nobody listens on.
"""

from __future__ import annotations

import socket
import threading

ANSWERS = {
    "hit": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n{extra}\r\n",
    "miss": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    "redirect": b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
    "garbage": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
}


class ScriptedServer:
    def __init__(self, mode: str = "hit", origin_headers: str | None = None) -> None:
        self.mode = mode
        self.origin_headers = origin_headers
        self.requests: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._held: list[socket.socket] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        if self.mode == "close":
            conn.close()
            return
        data = b""
        conn.settimeout(10)
        try:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        self.requests.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
        if self.mode == "hang":
            self._held.append(conn)
            return
        answer = ANSWERS[self.mode]
        extra = b""
        if self.origin_headers is not None:
            extra = f"X-Withcache-Origin-Headers: {self.origin_headers}\r\n".encode()
        try:
            conn.sendall(answer.replace(b"{extra}", extra))
        finally:
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        for conn in self._held:
            conn.close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def closed_port() -> tuple[socket.socket, str]:
    """An http:// URL on 127.0.0.1 that refuses connections (the socket is held, not
    listening, so nobody else takes the port)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


class CountingProxy:
    """A small forwarding HTTP proxy on 127.0.0.1 that counts what it is asked.

    It takes absolute-form requests (`GET http://host:port/path HTTP/1.1`), records the
    method and URL, and forwards them to the target only when `reachable` is true and the
    target is on 127.0.0.1 or localhost (nothing ever leaves the machine); otherwise it
    answers 502, as a proxy that cannot reach the cache-host does.
    """

    def __init__(self, reachable: bool = True) -> None:
        self.reachable = reachable
        self.requests: list[tuple[str, str]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, url, _version = (lines[0].split(" ") + ["", ""])[:3]
            self.requests.append((method, url))
            target = url.partition("://")[2]
            authority, slash, path = target.partition("/")
            host, _, port = authority.rpartition(":")
            if not (self.reachable and host in ("127.0.0.1", "localhost") and port.isdigit()):
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            headers = [
                line
                for line in lines[1:]
                if line.split(":", 1)[0].strip().lower()
                not in ("connection", "proxy-connection", "keep-alive")
            ]
            request = "\r\n".join(
                [f"{method} {slash}{path} HTTP/1.1", *headers, "Connection: close", "", ""]
            )
            try:
                with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as up:
                    up.sendall(request.encode("latin-1") + body)
                    while chunk := up.recv(65536):
                        conn.sendall(chunk)
            except OSError:
                return

    def count(self) -> int:
        return len(self.requests)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
