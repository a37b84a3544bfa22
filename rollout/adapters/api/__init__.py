"""The HTTP flag service: flags, evaluation, OFREP, outcomes and admin actions, per-tenant tokens.

    from rollout.adapters.api import ApiSettings, create_app
    app = create_app(ApiSettings(database_url="postgresql://..."))

or from the command line: `rollout serve --host 127.0.0.1 --port 8080`.
"""

from rollout.adapters.api.app import create_app
from rollout.adapters.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
