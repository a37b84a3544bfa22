"""The core is pure at run time: importing it (or the judge, or `rollout` itself) loads no I/O framework.

Each case runs in a fresh interpreter, because this test process has long
since imported SQLAlchemy and friends for the other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# The top-level packages of the imperative shell: a database, a web stack, Prefect.
SHELL = ("sqlalchemy", "psycopg", "prefect", "httpx", "fastapi", "starlette", "uvicorn", "alembic")

EVERY_CORE_MODULE = (
    "import pkgutil, rollout.core\n"
    "for m in pkgutil.walk_packages(rollout.core.__path__, 'rollout.core.'):\n"
    "    __import__(m.name)\n"
)


def loaded_by(code: str) -> set[str]:
    """The top-level packages in sys.modules after a fresh interpreter runs `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("code", [
    "import rollout",
    "import rollout.core",
    "import rollout.core.stats",
    "from rollout.core.stats import judge, judge_paired",
    "import rollout.core.controller, rollout.core.plan, rollout.core.scorers, rollout.core.outcome",
    "import rollout.errors",
    EVERY_CORE_MODULE,
])
def test_the_core_loads_no_shell_package(code: str) -> None:
    # Given a fresh interpreter, When it runs the import
    loaded = loaded_by(code)
    # Then not one database, web or Prefect package came with it
    assert loaded.isdisjoint(SHELL), sorted(loaded & set(SHELL))


def test_the_probe_would_see_a_shell_package() -> None:
    # The check above can fail: importing the SDK does load the database layer.
    assert {"sqlalchemy", "psycopg"} <= loaded_by("import rollout.sdk")
