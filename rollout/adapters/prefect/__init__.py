"""Prefect: the rollout flow, its deployment server, and the artifacts and reports it shows in the UI."""
