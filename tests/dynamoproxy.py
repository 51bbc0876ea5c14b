"""A proxy in front of a DynamoDB endpoint that injects real faults into chosen requests:
throttling (answered without forwarding), lost answers (forwarded and applied, then the
connection is dropped, so botocore retries a write that already happened) and delays.

Requests are numbered from the moment the proxy is armed; `log` lists (operation, table) of
every request seen since, so a test can first record what an operation sends, then replay it
with a fault at each step.
"""
from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

THROTTLED = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                        "message": "injected by the test proxy"}).encode()


@dataclass
class Fault:
    at: int  # the request number (0: the first after arming)
    action: str  # "throttle" (every attempt of that request), "drop" (apply, lose the answer), "delay"
    seconds: float = 0.3
    target: tuple[str, str] | None = field(default=None)  # set when it fires: (operation, table)


class DynamoProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.log: list[tuple[str, str]] = []
        self.fault: Fault | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                try:
                    table = json.loads(body or b"{}").get("TableName", "")
                except ValueError:
                    table = ""
                action = proxy._action(operation, table)
                if action == "throttle":
                    self.send_response(400)
                    self.send_header("Content-Type", "application/x-amz-json-1.0")
                    self.send_header("Content-Length", str(len(THROTTLED)))
                    self.end_headers()
                    self.wfile.write(THROTTLED)
                    return
                if action == "delay":
                    time.sleep(proxy.fault.seconds if proxy.fault else 0)
                status, headers, answer = proxy._forward(self.command, self.path, dict(self.headers), body)
                if action == "drop":
                    self.close_connection = True  # applied upstream; the client never hears of it
                    return
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def arm(self, fault: Fault | None) -> None:
        with self._lock:
            self.log = []
            self.fault = fault

    def _action(self, operation: str, table: str) -> str:
        with self._lock:
            number = len(self.log)
            self.log.append((operation, table))
            fault = self.fault
            if fault is None:
                return "pass"
            if number == fault.at:
                fault.target = (operation, table)
                return fault.action
            if fault.action == "throttle" and fault.target == (operation, table) and number == fault.at + 1:
                return "throttle"  # botocore's retry of the throttled request
            return "pass"

    def _forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            connection.request(method, path, body, {k: v for k, v in headers.items() if k.lower() != "connection"})
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
