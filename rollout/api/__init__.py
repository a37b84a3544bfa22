"""The HTTP flag service: flags, evaluation, OFREP, outcomes and admin actions, per-tenant tokens.

    from rollout.api import ApiSettings, create_app
    app = create_app(ApiSettings(database_url="postgresql://..."))

or from the command line: `rollout serve --host 127.0.0.1 --port 8080`.
"""

from rollout.api.app import create_app
from rollout.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
