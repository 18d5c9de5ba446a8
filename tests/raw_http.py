"""A raw HTTP/1.1 client connection for tests that need to see exactly what a server wrote."""

from __future__ import annotations

import socket


class Client:
    """A raw HTTP/1.1 client connection that reads answers one at a time (pipelining)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"closed with {self.buffer!r} unanswered"
        self.buffer += chunk

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._more()
        taken, self.buffer = self.buffer[:size], self.buffer[size:]
        return taken

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._more()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def answer(self, head: bool = False) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """The next response: (status line, headers, body un-chunked); head: no body
        expected (a HEAD, a 100 Continue)."""
        status = self._line()
        headers: dict[bytes, bytes] = {}
        while line := self._line():
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
        if head:
            return status, headers, b""
        if b"content-length" in headers:
            return status, headers, self._take(int(headers[b"content-length"]))
        assert headers.get(b"transfer-encoding") == b"chunked"
        body = b""
        while size := int(self._line(), 16):
            body += self._take(size)
            assert self._take(2) == b"\r\n"
        assert self._take(2) == b"\r\n"
        return status, headers, body

    def closed(self) -> bool:
        """True once the server closed the connection with nothing more sent."""
        return not self.buffer and self.sock.recv(65536) == b""
