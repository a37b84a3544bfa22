"""A local stand-in for an OpenAI-compatible chat endpoint, for tests, the demo and benchmarks.

It listens on 127.0.0.1 only, answers `POST /v1/chat/completions` with a grade
that a function of the prompt decides, reports token usage like the real API,
and can be told to be slow or to fail, so the LLM judge's retries, timeouts and
cost metering are tested over a real socket. Standard library only.

    with FakeChatEndpoint(grade=lambda prompt: "4") as endpoint:
        judge = LlmJudge(base_url=endpoint.base_url, model="m", rubric="...", scale=(1, 5))
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeChatEndpoint:
    def __init__(self, grade: Callable[[str], str], *, latency: float = 0.0) -> None:
        self.grade = grade
        self.latency = latency
        self.fail_next = 0          # answer this many requests with 503 before answering again
        self.requests = 0
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"   # keep-alive, as real endpoints do; a new TCP connection a call costs more than the grade

            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with endpoint._lock:
                    endpoint.requests += 1
                    failing = endpoint.fail_next > 0
                    if failing:
                        endpoint.fail_next -= 1
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if failing:
                    self._send(503, {"error": {"message": "overloaded"}})
                    return
                if endpoint.latency:
                    time.sleep(endpoint.latency)
                prompt = "".join(m.get("content", "") for m in body.get("messages", []))
                reply = endpoint.grade(prompt)
                self._send(200, {
                    "id": "fake", "object": "chat.completion", "model": body.get("model", ""),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    # a token is about four characters: enough to test cost metering
                    "usage": {"prompt_tokens": len(prompt) // 4 + 1, "completion_tokens": len(reply) // 4 + 1,
                              "total_tokens": len(prompt) // 4 + len(reply) // 4 + 2},
                })

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-chat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)

    def __enter__(self) -> FakeChatEndpoint:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


__all__ = ["FakeChatEndpoint"]
