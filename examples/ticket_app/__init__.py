"""A small "summarize a support ticket" service with local, deterministic fake models.

Used by the demo and the end-to-end tests: two models whose quality (per
ticket category), latency, cost and refusal rate (per user stratum) are
configurable, an eval case file (cases.jsonl, 200 tickets), scorers (the eval
gate's and a deterministic online judge, `scoring.key_facts_judge`), and a
service that serves every stage through `client.call()`, keeps exposure tokens
and sends its users' late thumbs-down.
"""
