"""The SDK an application uses: local evaluation from a snapshot, buffered outcomes."""

from rollout.client.client import ClientStats, RolloutClient

__all__ = ["ClientStats", "RolloutClient"]
