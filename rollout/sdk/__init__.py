"""The SDK an application uses: local evaluation from a snapshot, buffered outcomes, shadow runs."""

from rollout.sdk.client import ClientStats, RolloutClient
from rollout.sdk.shadow import Retry, ShadowStats

__all__ = ["ClientStats", "Retry", "RolloutClient", "ShadowStats"]
