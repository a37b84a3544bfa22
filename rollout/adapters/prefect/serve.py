"""Serve the rollout deployment: one process, no work pool, and the UI's Run button works.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m rollout.adapters.prefect.serve

Release managers then start a rollout from the UI (deployment "rollout/rollout": the
`plan` field takes the typed form, pasted YAML, or a registered plan's name) or with
`rollout start plan.yaml` (`--at TIME` schedules it).
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
        # The server checks a run's parameters against the plan form's schema before the run exists.
        enforce_parameter_schema=True,
    )
    serve(deployment, limit=int(os.environ.get("ROLLOUT_MAX_CONCURRENT_ROLLOUTS", "20")))


if __name__ == "__main__":
    main()
