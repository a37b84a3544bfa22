"""Ready-made Prefect automations: tell people when a rollout needs them or went wrong.

`rollout automations install --block NAME` creates one automation per event below, each reacting to
the first such event (threshold 1) on any flag (`rollout.flag.*`) and sending it to a notification
block the user already made (Slack, e-mail, a custom webhook ...). Installing again replaces them,
so the command is safe to re-run after changing the block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollout.core.controller import LOST

EVENTS = {
    "rollout.approval_requested": "approval requested",
    "rollout.held": "held",
    "rollout.rolled_back": "rolled back",
    LOST: "lost (no controller renews the lease)",
}
PREFIX = "rollout: "

_BODY = (
    "Rollout of {{ event.resource['prefect.resource.name'] or event.resource.id }}: "
    "{{ event.event }}\n"
    "{% if event.payload.stage %}stage: {{ event.payload.stage }}\n{% endif %}"
    "{% if event.payload.reason %}why: {{ event.payload.reason }}\n{% endif %}"
    "at {{ event.occurred }}"
)


@dataclass(frozen=True, slots=True)
class Installed:
    name: str
    event: str
    id: str


def install(block: str, *, flag: str = "*") -> list[Installed]:
    """Create (or replace) the four automations, sending to the notification block named `block`.

    `block` is a block document's name, or `type-slug/name` when two blocks share a name.
    """
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification
    from prefect.client.orchestration import get_client

    block_id = _block_id(block)
    out: list[Installed] = []
    for event, title in EVENTS.items():
        name = f"{PREFIX}{title.split(' (')[0]}" + ("" if flag == "*" else f" ({flag})")
        with get_client(sync_client=True) as client:
            for old in client.read_automations_by_name(name=name):  # re-installing replaces, never doubles
                client.delete_automation(old.id)
        automation = Automation(
            name=name,
            description=f"Sends every {event} event of rollout.flag.{flag} to the block {block}",
            trigger=EventTrigger(expect={event}, match={"prefect.resource.id": f"rollout.flag.{flag}"},
                                 posture=Posture.Reactive, threshold=1, within=0),
            actions=[SendNotification(block_document_id=block_id, subject=f"Rollout {title}: "
                                      "{{ event.resource['prefect.resource.name'] }}", body=_BODY)],
        ).create()
        out.append(Installed(name=name, event=event, id=str(automation.id)))
    return out


def _block_id(block: str) -> Any:
    """The id of the notification block the user names; a clear error when there is none or two."""
    from prefect.client.orchestration import get_client

    from rollout.errors import InvalidInputError

    slug, _, name = block.rpartition("/")
    with get_client(sync_client=True) as client:
        documents = [d for d in client.read_block_documents() if d.name == name
                     and (not slug or (d.block_type and d.block_type.slug == slug))]
    if not documents:
        raise InvalidInputError(f"no Prefect block named {block!r}; create a notification block (e.g. Slack webhook, "
                                "custom webhook) in the UI's Blocks page first")
    if len(documents) > 1:
        kinds = ", ".join(f"{d.block_type.slug}/{d.name}" for d in documents if d.block_type)
        raise InvalidInputError(f"several blocks are named {name!r} ({kinds}); name one as TYPE/NAME")
    return documents[0].id


def emit_lost(flag: str, rollout_id: int, reason: str) -> bool:
    """Tell the Prefect server a rollout has no live controller (the `lost` automation alerts on it).

    Called where the status view sees the lease expired; True when the event was sent.
    """
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    event = emit_event(event=LOST, resource={"prefect.resource.id": f"rollout.flag.{flag}",
                                             "prefect.resource.name": flag},
                       payload={"rollout_id": rollout_id, "reason": reason})
    # A CLI process exits right after: send the event now rather than from a worker that dies with it.
    EventsWorker.drain_all(timeout=10)
    return event is not None
