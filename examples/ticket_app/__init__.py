"""A small "summarize a support ticket" service with local, deterministic fake models.

Used by the demo and the end-to-end tests: two models whose quality (per
ticket category), latency, cost and refusal rate (per user stratum) are
configurable, an eval case file (cases.jsonl, 200 tickets), a scorer, and a
service that serves the assigned variant and shadows the candidate.
"""
