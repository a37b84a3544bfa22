"""The SDK an application uses: local evaluation from a snapshot, buffered outcomes, shadow runs."""

from rollout.client.client import ClientStats, RolloutClient
from rollout.client.shadow import Retry, ShadowStats

__all__ = ["ClientStats", "Retry", "RolloutClient", "ShadowStats"]
