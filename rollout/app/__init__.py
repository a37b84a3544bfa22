"""Use cases: one check of a rollout, the check loop and abort path, approvals, the eval runner, status views.

This layer composes the pure core with the store; the adapters (CLI, HTTP, Prefect) call it.
"""
