"""The package works from its wheel: the core alone serves an app, `rollout[all]` runs the controller's CLI.

The wheel is built once; each install goes into a fresh virtual environment
(from the local package mirror), and the checks run there as real processes,
so nothing of this source tree or of the test venv can stand in for a missing
file or an undeclared dependency.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.install_size import build_wheel, distributions, fresh_venv, install
from rollout.store import create_flag, make_engine, set_allocation, transaction
from rollout.store.migrate import MIGRATIONS
from rollout.store.models import Outcome

pytestmark = pytest.mark.slow

# What an app that only assigns and records must not have to install.
# (pydantic is not among them: the core's connection settings are pydantic-settings, which needs it)
CONTROLLER_AND_SERVER = {"prefect", "numpy", "scipy", "pyyaml", "alembic", "typer", "rich", "matplotlib",
                         "fastapi", "uvicorn", "starlette", "orjson", "prometheus_client", "httpx", "openfeature_sdk"}


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def core_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    python = fresh_venv(tmp_path_factory.mktemp("venvs") / "core")
    install(python, str(wheel))
    yield python


@pytest.fixture(scope="module")
def full_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    python = fresh_venv(tmp_path_factory.mktemp("venvs") / "all")
    install(python, f"rollout[all] @ {wheel.as_uri()}")
    yield python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # cwd outside the source tree, so `import rollout` can only find the installed copy.
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_the_wheel_holds_one_package_with_its_migrations(wheel: Path) -> None:
    # Given the built wheel, When its files are listed
    names = zipfile.ZipFile(wheel).namelist()
    # Then it installs one top-level package (no stray `flows` or `tests`), with every migration inside
    assert {n.split("/")[0] for n in names} == {"rollout", "rollout-0.1.0.dist-info"}
    shipped = {n.rsplit("/", 1)[-1] for n in names if n.startswith("rollout/store/migrations/versions/")}
    assert shipped == {p.name for p in (MIGRATIONS / "versions").glob("*.py")}
    assert "rollout/store/migrations/env.py" in names and "rollout/store/migrations/script.py.mako" in names


SDK_SCRIPT = """
import json, sys
import rollout
client = rollout.RolloutClient(sys.argv[1], refresh_interval=0.2)
answers = [client.assign("summarizer", f"user-{i}") for i in range(200)]
for i, a in enumerate(answers):
    client.record("summarizer", f"user-{i}", {"latency_ms": 10.0 + i % 7, "error": 0})
flushed = client.flush(timeout=30)
client.close()
print(json.dumps({
    "variants": sorted({a.variant for a in answers}),
    "errors": [a.error_code for a in answers if a.error_code is not None],
    "flushed": flushed,
    "file": rollout.__file__,
    "modules": sorted({m.split(".")[0] for m in sys.modules}),
}))
"""


def test_the_core_install_assigns_and_records(core_python: Path, db_url: str, tmp_path: Path) -> None:
    # Given a database migrated by the test venv, with a flag half on its candidate
    engine = make_engine(db_url)
    with transaction(engine) as s:
        create_flag(s, "summarizer", variants=["current", "new-model"], actor="packager")
    with transaction(engine) as s:
        set_allocation(s, "summarizer", 5_000, actor="packager")
    # When an app in a venv holding only the core install assigns 200 users and records an outcome each
    done = run(core_python, "-c", SDK_SCRIPT, db_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Then both arms are served without an error, from the installed package, and every outcome is stored
    assert result["variants"] == ["current", "new-model"] and result["errors"] == [] and result["flushed"]
    assert "site-packages" in result["file"]
    with transaction(engine) as s:
        assert s.scalar(select(func.count()).select_from(Outcome)) == 400  # two metrics per outcome
    engine.dispose()
    # And none of the controller's or the service's packages was installed, let alone loaded
    assert CONTROLLER_AND_SERVER.isdisjoint(distributions(core_python))
    assert {"numpy", "scipy", "prefect", "yaml", "orjson", "alembic"}.isdisjoint(result["modules"])


def test_the_core_install_names_the_extra_a_command_needs(core_python: Path, tmp_path: Path) -> None:
    # Given the core install, When its `rollout` script is asked for the flags
    done = run(core_python.parent / "rollout", "flag", "list", cwd=tmp_path)
    # Then it says on one line which extra to install, and exits 1 (nothing the command line can fix)
    assert done.returncode == 1
    assert done.stderr.strip() == ("rollout: this command needs the 'controller' extra (module 'typer' is not "
                                   "installed): pip install 'rollout[controller]'")


def test_the_full_install_migrates_a_fresh_database_and_helps(full_python: Path, tmp_path: Path) -> None:
    rollout_script = full_python.parent / "rollout"
    # Given `rollout[all]` from the wheel and no database yet
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    # When its console script migrates one, and a flag is created in it
    upgraded = run(rollout_script, "--db", url, "db", "upgrade", cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    created = run(rollout_script, "--db", url, "flag", "create", "summarizer", "--variants", "a,b", "--by", "t",
                  cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    # Then the schema is the newest the migrations know, and the flag is in it
    with transaction(make_engine(url)) as s:
        from rollout.store.flags import list_flags

        assert [f.key for f in list_flags(s)] == ["summarizer"]
    # And every command group answers --help
    helped = run(rollout_script, "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    for group in ("db", "flag", "plan", "start", "status", "approve", "token", "serve"):
        assert group in helped.stdout
    # And the service, the flow, the report and the OpenFeature provider all import from the install
    imported = run(full_python, "-c", "import rollout.adapters.api.app, rollout.adapters.prefect.flow, "
                   "rollout.adapters.prefect.report, rollout.adapters.openfeature, rollout.app.evals", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
