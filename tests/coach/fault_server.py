"""A fault-injecting chat completions endpoint on loopback, for coach robustness tests.

Each incoming request takes the next action from a script: ``"429"``/``"500"``/``"400"`` (that HTTP
error), ``"timeout"`` (answer later than any client waits), ``"drop"`` (close the connection without
answering), ``"malformed"`` (a 200 reply without a score line), ``"score:<n>"`` (a 200 reply ending with
``PROCESS_SCORE: <n>``) or ``"forward"`` (pass the request to a real upstream server and relay its
answer). When the script is empty, the default action applies. Every request body is recorded.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultServer:
    def __init__(self, *, default: str = "score:7", upstream: str | None = None, timeout_sleep_s: float = 5.0):
        self.script: deque[str] = deque()
        self.default = default
        self.upstream = upstream
        self.timeout_sleep_s = timeout_sleep_s
        self.requests: list[dict] = []
        self.active = 0  # requests being handled right now
        self.peak_active = 0  # the most ever handled at once
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def next_action(self) -> str:
        with self._lock:
            return self.script.popleft() if self.script else self.default

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                with server._lock:
                    server.active += 1
                    server.peak_active = max(server.peak_active, server.active)
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server.active -= 1

            def _answer(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                with server._lock:
                    server.requests.append(body)
                action = server.next_action()
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if action == "timeout":
                    time.sleep(server.timeout_sleep_s)
                    action = "score:5"
                if action in ("429", "500", "400", "503"):
                    self._send(int(action), {"error": {"message": f"injected {action}", "type": "injected"}})
                elif action == "malformed":
                    self._send(200, _completion(body["model"], "The code looks fine to me, nothing more to say."))
                elif action.startswith("score:"):
                    self._send(200, _completion(body["model"], f"Analysis: ok.\nPROCESS_SCORE: {action.split(':', 1)[1]}"))
                elif action == "forward":
                    request = urllib.request.Request(server.upstream + "/chat/completions", data=raw,
                                                     headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=600) as response:
                        self._send(response.status, json.loads(response.read()))
                else:
                    raise AssertionError(f"unknown scripted action {action!r}")

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            def log_message(self, *args):
                pass

        return Handler


def _completion(model: str, content: str) -> dict:
    return {
        "id": "cmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
    }
