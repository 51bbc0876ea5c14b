"""A plain HTTP/1.1 keep-alive socket: nothing retries or reconnects behind a test's back."""
from __future__ import annotations

import asyncio


class KeepAliveConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, base_url: str) -> "KeepAliveConnection":
        port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                      ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Length": str(len(body)), **(headers or {})}
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        answer_headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
        length = int(answer_headers.get("content-length", 0))
        return int(status_line.split()[1]), answer_headers, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()
