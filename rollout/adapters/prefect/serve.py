"""Serve the rollout deployment: one process, no work pool, and the UI's Run button works.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m rollout.adapters.prefect.serve

Release managers then start a rollout from the UI (deployment "rollout/rollout",
the plan goes in the `plan` field) or with `rollout start plan.yaml`.
"""

from __future__ import annotations

import os

from prefect import serve

from rollout.adapters.prefect.flow import run_rollout


def main() -> None:
    # The runner looks for new runs every PREFECT_RUNNER_POLL_FREQUENCY seconds (10 by default).
    deployment = run_rollout.to_deployment(
        name="rollout",
        description="Carry a candidate from shadow to full release, stage by stage, with the judge and approvals.",
        tags=["rollout"],
        parameters={"started_by": os.environ.get("ROLLOUT_DEFAULT_STARTED_BY", "prefect-ui")},
    )
    serve(deployment, limit=int(os.environ.get("ROLLOUT_MAX_CONCURRENT_ROLLOUTS", "20")))


if __name__ == "__main__":
    main()
