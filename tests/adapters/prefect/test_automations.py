"""`rollout automations install` on a real Prefect server: the alert reaches a webhook when the event is emitted."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from rollout.adapters.cli.main import main
from rollout.adapters.prefect.automations import EVENTS, emit_lost

pytestmark = pytest.mark.slow


class Hook:
    """A local HTTP server standing in for Slack & co.: it keeps every JSON body posted to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.received:
                if text in json.dumps(body):
                    return body
            time.sleep(0.2)
        raise AssertionError(f"no notification with {text!r} within {timeout}s; got {self.received}")


@pytest.fixture
def hook() -> Any:
    hook = Hook()
    yield hook
    hook.server.shutdown()


def test_installed_automations_notify_the_named_block(prefect_server: Any, hook: Hook,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events import emit_event

    from rollout.testing.prefect_server import drain_workers

    # Given a webhook notification block pointed at a local HTTP server
    CustomWebhookNotificationBlock(name="ops", url=hook.url, json_data={"subject": "{{subject}}", "body": "{{body}}"},
                                   allow_private_urls=True).save("ops-alerts", overwrite=True)
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    # When the automations are installed for it, twice (re-installing replaces them)
    for _ in range(2):
        assert main(["automations", "install", "--block", "ops-alerts"]) == 0
    assert capsys.readouterr().out.count("installed automation") == 8
    with get_client(sync_client=True) as client:
        ours = [a for a in client.read_automations() if a.name.startswith("rollout: ")]
    assert sorted(e for a in ours for e in a.trigger.expect) == sorted(EVENTS)  # type: ignore[union-attr]
    assert all(a.trigger.threshold == 1 for a in ours)  # type: ignore[union-attr]
    time.sleep(2)  # the server's trigger service loads new automations on its own schedule
    # And a rollout is held, then found lost by `rollout status`
    emit_event(event="rollout.held", resource={"prefect.resource.id": "rollout.flag.summarizer",
                                               "prefect.resource.name": "summarizer"},
               payload={"reason": "data cannot be trusted: sample ratio mismatch"})
    drain_workers()
    # Then the webhook receives the notification, with the flag and the reason
    held = hook.wait_for("sample ratio mismatch")
    assert "summarizer" in held["subject"] and "rollout.held" in held["body"], held
    assert emit_lost("summarizer", 7, "no controller renewed the lease since 12:00")
    lost = hook.wait_for("no controller renewed the lease")
    assert lost["subject"].startswith("Rollout lost"), lost


def test_a_missing_block_is_refused_in_words(prefect_server: Any, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    assert main(["automations", "install", "--block", "nobody-made-this"]) == 2
    assert "no Prefect block named 'nobody-made-this'" in capsys.readouterr().err
