"""Writes cases.jsonl: 200 support tickets in five categories, each with the key facts a summary must keep.

    python -m examples.ticket_app.make_cases
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CATEGORIES = {
    "billing": (["charged twice", "invoice 4471", "refund requested", "card ending 0042", "plan downgrade",
                 "VAT missing", "annual renewal"], "Billing problem"),
    "login": (["password reset loop", "2FA code rejected", "SSO with Okta", "account locked", "new laptop",
               "email changed", "session expires"], "Cannot sign in"),
    "bug": (["export to CSV fails", "error 500", "since version 4.2", "large workspace", "Safari only",
             "attachments missing", "timezone wrong"], "Something is broken"),
    "feature": (["dark mode", "API rate limits", "bulk edit", "Slack integration", "custom fields",
                 "audit log export", "offline mode"], "Feature request"),
    "refund": (["order 9918", "arrived damaged", "within 30 days", "store credit", "partial refund",
                "return label", "duplicate order"], "Refund request"),
}


def cases(per_category: int = 40, seed: int = 42) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for category, (facts, subject) in CATEGORIES.items():
        for i in range(per_category):
            chosen = rng.sample(facts, 3)
            body = " ".join(f"Also: {f}." for f in chosen)
            ticket = {"id": f"{category}-{i:03d}", "category": category, "subject": subject,
                      "body": f"Hello support. {body} Thanks.", "facts": chosen}
            out.append({"id": ticket["id"], "category": category, "input": ticket,
                        "expected": {"facts": chosen}})
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("cases.jsonl")
    path.write_text("".join(json.dumps(c) + "\n" for c in cases()), encoding="utf-8")
    print(f"wrote {path}")
