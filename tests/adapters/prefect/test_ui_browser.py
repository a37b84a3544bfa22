"""A release manager in a real browser: the whole walk-through of issue 14 in the Prefect UI alone.

The first test starts a rollout from the typed form and approves it at the gate (an empty form refused first);
the second picks a registered plan by name, schedules it with Start: Later, rejects it at the gate, then starts
it again by name and cancels it while the candidate is live.

Headless Chromium (Debian's `chromium` and `chromium-driver`, which .ci/run installs) drives the Prefect UI of a
real Prefect server with the deployment served by `python -m rollout.adapters.prefect.serve`. The screenshots go
to tests/output/browser/ (git-ignored); the README's pictures in docs/img/ are copies of them.

SQLite only: this test is about what the UI shows and sends; the flow on PostgreSQL is tested in test_rollout_flow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from rollout import RolloutClient
from rollout.adapters.cli.main import main
from rollout.store import flags as flag_store
from rollout.store import migrate
from rollout.store import rollouts as rollout_store
from rollout.store.db import make_engine, transaction
from rollout.testing import Traffic, VariantBehaviour

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[3]
OUT = ROOT / "tests" / "output" / "browser"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


# --- the browser and what a person does in it ------------------------------------------------------

@pytest.fixture
def browser() -> Iterator[Any]:
    yield from _chromium()


# Headless Chromium says it has no mouse (`(hover: none)`), and for such a device the Prefect UI draws "Start:
# Later" as a bare date field (midnight). On a desktop with a mouse the same field opens a date-and-time picker:
# these Blink settings make headless Chromium report a mouse, as a release manager's desktop does. (With a mouse
# the UI also draws its own dropdowns instead of <select>, which `choose` drives: so only scheduling uses it.)
MOUSE = "--blink-settings=primaryHoverType=2,availableHoverTypes=2,primaryPointerType=4,availablePointerTypes=4"
desktop_chromium = contextmanager(lambda: _chromium(MOUSE))
"""Chromium as on a desktop with a mouse: the UI offers the date-and-time picker for Start: Later."""


def _chromium(*extra: str) -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800",
                "--disable-gpu", "--no-first-run", *extra):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    # A driver given by path: selenium never tries to download one (there is no internet).
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(15)
    try:
        yield driver
    finally:
        driver.quit()


def prop(root: Any, label: str) -> Any:
    """The form property labelled `label`: the first one under `root`, in page order."""
    from selenium.webdriver.common.by import By

    return root.find_element(By.XPATH, (
        ".//div[contains(@class,'schema-form-property')][./div[contains(@class,'p-label__header')]"
        f"//span[contains(@class,'schema-form-property__label') and (normalize-space()='{label}' or "
        f"normalize-space()='{label} (Optional)')]]"))


def type_into(root: Any, label: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = prop(root, label).find_element(By.XPATH, ".//textarea|.//input")
    field.clear()
    field.send_keys(value)


def choose(root: Any, label: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(prop(root, label).find_element(By.TAG_NAME, "select")).select_by_visible_text(value)


def click(root: Any, text: str) -> None:
    from selenium.webdriver.common.by import By

    button = root.find_element(By.XPATH, f".//button[normalize-space()='{text}']")
    button.location_once_scrolled_into_view  # noqa: B018 - scrolls the button into view
    button.click()


def add_item(driver: Any, list_label: str) -> Any:
    """Add an item to a list field; returns the new item's card."""
    from selenium.webdriver.common.by import By

    field = prop(driver, list_label)
    click(field, "Add item")
    return field.find_elements(By.XPATH, ".//div[contains(@class,'schema-form-property-object')]")[-1]


def shoot(driver: Any, name: str, *, top: Any = None) -> Path:
    """A screenshot of the window, kept under tests/output/browser/; `top` is scrolled to the top first.

    The Prefect UI scrolls inside its own container, so a whole-page capture shows no more than the window.
    """
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    if top is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", top)
        time.sleep(0.5)
    driver.save_screenshot(str(path))
    return path


def wait_until(condition: Callable[[], Any], timeout: float, what: str, *, every: float = 0.5,
               between: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if between is not None:
            between()
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def runs_of(deployment: Any) -> list[tuple[str, str, str | None]]:
    """The deployment's flow runs as (name, state, message): what a failure message needs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))
    return [(r.name, r.state.name if r.state else "-", r.state.message if r.state else None) for r in runs]


SIDEWAYS_SCROLLERS = """
    const root = arguments[0], wide = [];
    for (const el of [root, ...root.querySelectorAll('*')]) {
        const overflow = getComputedStyle(el).overflowX;
        if ((overflow === 'auto' || overflow === 'scroll') && el.scrollWidth > el.clientWidth + 1)
            wide.push(`${el.tagName}.${el.className} ${el.scrollWidth}>${el.clientWidth}`);
    }
    return wide;"""
"""The elements under arguments[0] that would make a person scroll sideways to read them."""


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(none)"


# --- the served deployment ---------------------------------------------------------------------------

@pytest.fixture
def served(prefect_server: Any, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The deployment served against a fresh SQLite rollout database: (database URL, deployment)."""
    from prefect.client.orchestration import get_client

    from examples.demo import stop_serving

    db_url = f"sqlite:///{tmp_path / 'rollout.db'}"
    migrate.upgrade(db_url)
    env = {**os.environ, **prefect_server.env(), "ROLLOUT_DATABASE_URL": db_url, "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "ROLLOUT_DEFAULT_STARTED_BY": "release-manager"}
    OUT.mkdir(parents=True, exist_ok=True)
    log = (OUT / "serve.log").open("wb")  # kept beside the screenshots, for when the test fails
    serve = subprocess.Popen([sys.executable, "-m", "rollout.adapters.prefect.serve"], cwd=ROOT, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def deployment() -> Any:
            with get_client(sync_client=True) as prefect:
                try:
                    found = prefect.read_deployment_by_name("rollout/rollout")
                except Exception:  # noqa: BLE001 - not registered yet
                    return None
            # The Prefect server is the session's: an earlier test's serve registered the same deployment
            # with its own defaults. Wait until this serve has registered it (its default is ours), or
            # the form would load with that test's defaults.
            return found if found.parameters.get("started_by") == "release-manager" else None

        yield db_url, wait_until(deployment, 90, "the served deployment")
    finally:
        stop_serving(serve)


def test_a_release_manager_starts_and_approves_a_rollout_in_the_prefect_ui(
        browser: Any, served: tuple[str, Any], prefect_server: Any) -> None:
    from selenium.webdriver.common.by import By

    db_url, deployment = served
    engine = make_engine(db_url)
    ui = prefect_server.ui_url.rstrip("/")
    # Given the deployment's run page, where the plan parameter is a typed form
    browser.get(f"{ui}/deployments/deployment/{deployment.id}/run")
    assert prop(browser, "Flag")

    def choices() -> list[str]:  # the button group renders its labels a moment after the form
        return [b.get_attribute("textContent").strip() for b in browser.find_elements(
            By.XPATH, "//button[contains(@class,'p-button-group__button')]")][:3]

    wait_until(lambda: choices() == ["Plan (form)", "Plan (YAML text)", "Plan (registered name)"], 30,
               f"the plan's three ways in (saw {choices()})")
    # When the release manager fills it in: flag, variants, two stages (a ramp, then full behind an approval)
    type_into(browser, "Flag", "summarizer")
    type_into(browser, "Baseline variant", "current")
    type_into(browser, "Candidate variant", "new-model")
    canary = add_item(browser, "Stages")
    type_into(canary, "Name", "canary")
    choose(canary, "Kind", "ramp")
    click(prop(canary, "Percent served the candidate (ramp)"), "float")
    type_into(canary, "Percent served the candidate (ramp)", "30")
    type_into(canary, "Minimum samples per arm", "200")
    type_into(canary, "Minimum duration", "1s")
    full = add_item(browser, "Stages")
    type_into(full, "Name", "full")
    choose(full, "Kind", "full")
    choose(full, "Approval", "required")
    error = add_item(browser, "Metrics")
    type_into(error, "Name", "error")
    choose(error, "Kind", "binary")
    choose(error, "Better is", "lower")
    type_into(error, "Margin", "0.05")
    type_into(browser, "Check every", "1s")
    shoot(browser, "1-plan-form", top=prop(browser, "plan"))
    click(browser, "Submit")
    # Then a flow run starts and the rollout ramps the candidate; the app's traffic gives the judge evidence
    with RolloutClient(db_url, listen=False, refresh_interval=0.2) as client:
        traffic = Traffic(client, "summarizer", candidate=VariantBehaviour(), seed=5)

        def play() -> None:
            if "summarizer" in client.flag_versions():
                traffic.run(150)
                client.flush(timeout=30)

        def waiting() -> Any:
            with transaction(engine) as s:
                record = rollout_store.latest_rollout(s, "summarizer")
            return record if record is not None and record.state.status.value == "awaiting_approval" else None

        try:
            record = wait_until(waiting, 300, "the approval gate", between=play)
        except AssertionError:
            shoot(browser, "x-no-approval-gate")
            with transaction(engine) as s:
                latest = rollout_store.latest_rollout(s, "summarizer")
            raise AssertionError(f"no approval gate; the rollout: {latest and latest.state}; the runs: "
                                 f"{runs_of(deployment)}; serve.log ends:\n{tail(OUT / 'serve.log')}") from None
    assert record.started_by == "release-manager" and record.plan["stages"][1]["approval"] == "required"
    # When the release manager opens the paused run and submits the approval form empty
    browser.get(f"{ui}/runs/flow-run/{record.flow_run_id}")
    wait_until(lambda: browser.find_elements(By.XPATH, "//button[normalize-space()='Resume']"), 60, "the Resume button")
    shoot(browser, "2-paused-run")
    click(browser, "Resume")
    modal = browser.find_element(By.XPATH, "//div[contains(@class,'p-modal')]")
    shoot(browser, "3-approval-form")
    # Then the form shows one short line per metric (verdict, estimate, bounds, margin), readable without
    # scrolling sideways: no wide table
    metric_lines = [li.get_attribute("textContent").strip() for li in modal.find_elements(By.TAG_NAME, "li")]
    assert any(line.startswith("error:") and all(word in line for word in ("estimate", "bounds", "margin"))
               for line in metric_lines), metric_lines
    assert not modal.find_elements(By.TAG_NAME, "table")
    assert browser.execute_script(SIDEWAYS_SCROLLERS, modal) == []
    click(modal, "Submit")
    time.sleep(2)
    # Then the form is refused and nothing moves
    with transaction(engine) as s:
        assert rollout_store.get_rollout(s, record.id).state.status.value == "awaiting_approval"
        assert rollout_store.approvals(s, record.id) == []
    shoot(browser, "4-empty-approval-refused")
    # When they approve with their name
    choose(modal, "Decision", "approve")
    type_into(modal, "Approver", "Ada\t")  # leave the field: the form re-validates and its error line goes away
    time.sleep(1)  # ... before the click, which would otherwise land where the button was before that
    shoot(browser, "5-approval-filled")
    click(modal, "Submit")

    # Then the rollout goes on to the full stage, approved by Ada, and the flag serves everyone the candidate.
    # On a loaded machine the click sometimes lands while the form is still re-validating and is lost;
    # a person would click again, and so does the test (a second resume of a resumed run changes nothing).
    def promoted() -> Any:
        with transaction(engine) as s:
            r = rollout_store.get_rollout(s, record.id)
            return r if r.state.status.value == "promoted" else None

    def click_again_if_still_open() -> None:
        nonlocal last_click
        if time.monotonic() - last_click > 20 and browser.find_elements(By.XPATH, "//div[contains(@class,'p-modal')]"):
            try:
                click(browser.find_element(By.XPATH, "//div[contains(@class,'p-modal')]"), "Submit")
            except Exception:  # noqa: BLE001 - the form closed between the look and the click
                pass
            last_click = time.monotonic()

    last_click = time.monotonic()
    browser.implicitly_wait(0)
    try:
        done = wait_until(promoted, 300, "the promotion", every=1, between=click_again_if_still_open)
    except AssertionError:
        shoot(browser, "x-not-promoted")
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as prefect:
            raise AssertionError(f"flow run state: {prefect.read_flow_run(record.flow_run_id).state}") from None
    browser.implicitly_wait(15)
    assert "approved by Ada" in done.state.reason
    with transaction(engine) as s:
        assert flag_store.get_flag(s, "summarizer").phase.value == "promoted"
    browser.get(f"{ui}/runs/flow-run/{record.flow_run_id}")
    wait_until(lambda: "Ada approved stage full" in browser.page_source, 120, "the run page's logs")
    shoot(browser, "6-run-page")
    from prefect.artifacts import Artifact

    summary = Artifact.get("rollout-summarizer-summary")  # the latest version
    assert summary is not None
    browser.get(f"{ui}/artifacts/artifact/{summary.id}")
    wait_until(lambda: "promoted" in browser.page_source, 60, "the summary artifact")
    shoot(browser, "7-summary-artifact")
    # and the card ends with the chart of each metric's bounds against its margin, an image the UI loaded
    chart = wait_until(lambda: browser.find_elements(By.XPATH, "//img[starts-with(@src,'data:image/png;base64,')]"),
                       30, "the bounds chart in the summary card")[0]
    wait_until(lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", chart),
               30, "the chart to load")
    assert browser.execute_script("return arguments[0].naturalWidth", chart) > 0
    assert browser.execute_script("return arguments[0].getBoundingClientRect().width", chart) > 200
    chart.screenshot(str(OUT / "8-summary-chart.png"))  # the chart alone, as the UI drew it
    engine.dispose()


# --- the rest of the walk-through: by name, later, reject, cancel ------------------------------------

WALK_PLAN = """\
flag: summarizer
baseline: current
candidate: new-model
stages:
  - {name: canary, kind: ramp, percent: 30, min_samples: 50, min_duration: 1s}
  - {name: full, kind: full, approval: required}
metrics:
  - {name: error, kind: binary, better: lower, margin: 0.05}
check_interval: 1s
completion: {tolerance: "20%"}
"""


def flow_runs(deployment: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))


def flow_run(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        return prefect.read_flow_run(flow_run_id)


def open_run_form_by_name(driver: Any, ui: str, deployment: Any, name: str) -> None:
    """The deployment's run page with "Plan (registered name)" picked and the name typed."""
    driver.get(f"{ui}/deployments/deployment/{deployment.id}/run")
    wait_until(lambda: driver.find_elements(
        "xpath", "//button[normalize-space()='Plan (registered name)']"), 30, "the plan's three ways in")
    click(driver, "Plan (registered name)")
    type_into(driver, "Plan name", name + "\t")  # leave the field, so the form has taken the name before Submit
    wait_until(lambda: prop(driver, "Plan name").find_element("xpath", ".//textarea|.//input")
               .get_attribute("value") == name, 10, "the plan name in its field")
    time.sleep(1)  # the form re-validates on leaving the field; a click before that is lost


def submit_new_run(driver: Any, deployment: Any) -> Any:
    """Submit the run form; the flow run it created."""
    known = {r.id for r in flow_runs(deployment)}
    form_url = driver.current_url
    click(driver, "Submit")
    last_click = time.monotonic()

    def new_run() -> Any:
        return next((r for r in flow_runs(deployment) if r.id not in known), None)

    def click_again_if_still_on_the_form() -> None:
        # A click that lands while the form re-validates is lost (CI saw it once on 2 cores): the UI
        # leaves the form page once it has created the run, so still being there with no new run
        # after a while means nothing was sent, and clicking again cannot make a second run.
        nonlocal last_click
        if time.monotonic() - last_click > 15 and driver.current_url == form_url and new_run() is None:
            shoot(driver, "x-submit-again")
            click(driver, "Submit")
            last_click = time.monotonic()

    try:
        return wait_until(new_run, 90, "the new flow run", between=click_again_if_still_on_the_form)
    except AssertionError:
        shoot(driver, "x-no-new-run")
        errors = [e.text for e in driver.find_elements("xpath", "//*[contains(@class,'p-label__message')]") if e.text]
        raise AssertionError(f"no new flow run; still at {driver.current_url}; the form says {errors}") from None


def test_a_release_manager_schedules_by_name_rejects_and_cancels_in_the_prefect_ui(
        browser: Any, served: tuple[str, Any], prefect_server: Any, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    db_url, deployment = served
    engine = make_engine(db_url)
    ui = prefect_server.ui_url.rstrip("/")
    # Given a plan registered by name (as `rollout plan register` does it) whose last stage needs approval
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(WALK_PLAN)
    assert main(["--db", db_url, "plan", "register", str(plan_file), "--name", "summarizer-walk",
                 "--by", "release-manager"]) == 0

    # When the release manager picks it by name and chooses Start: Later, about two minutes ahead
    with desktop_chromium() as desktop:
        open_run_form_by_name(desktop, ui, deployment, "summarizer-walk")
        click(desktop, "Later")
        desktop.find_element(By.XPATH, "//button[contains(@class,'p-date-button__control')]").click()
        picker = desktop.find_element(By.XPATH, "//div[contains(@class,'p-date-picker')]")
        click(picker, "Now")  # today, now; then the time of day two minutes on (the field takes hours and minutes)
        hour, minute, at_ms = desktop.execute_script(
            "const t = new Date(Date.now() + 120000); return [t.getHours(), t.getMinutes(), t.getTime()]")
        time_of_day = picker.find_element(By.XPATH, ".//input[@type='time']")
        time_of_day.click()
        time_of_day.send_keys(Keys.LEFT, Keys.LEFT, f"{(hour % 12) or 12:02d}{minute:02d}{'AM' if hour < 12 else 'PM'}")
        chosen = datetime.fromtimestamp(at_ms / 1000, UTC).replace(second=0, microsecond=0)
        shoot(desktop, "9-start-later-picker")
        click(picker, "Apply")
        chosen_text = desktop.find_element(By.XPATH, "//button[contains(@class,'p-date-button__control')]").text
        assert f"{(hour % 12) or 12}:{minute:02d}" in chosen_text, chosen_text
        shoot(desktop, "10-start-later", top=desktop.find_element(By.XPATH, "//*[contains(@class,'flow-run-create-form-when')]"))
        submitted_at = datetime.now(UTC)
        run = submit_new_run(desktop, deployment)
    # Then the flow run is Scheduled for the minute chosen, with the plan by name
    assert run.state.name == "Scheduled", run.state
    scheduled_at = run.state.state_details.scheduled_time
    assert chosen <= scheduled_at < chosen + timedelta(minutes=1), (scheduled_at, chosen)
    assert run.parameters["plan"]["name"] == "summarizer-walk", run.parameters
    browser.get(f"{ui}/runs/flow-run/{run.id}")
    wait_until(lambda: "Scheduled" in browser.page_source, 60, "the scheduled run's page")
    shoot(browser, "11-scheduled-run")
    # and it starts at that time: the served runner takes a run up to its prefetch (10 s) early, never sooner
    started = wait_until(lambda: (r := flow_run(run.id)).start_time and r, 240, "the scheduled run to start", every=2)
    assert started.start_time >= scheduled_at - timedelta(seconds=10), (started.start_time, scheduled_at)
    assert started.start_time - submitted_at > timedelta(seconds=45), (started.start_time, submitted_at)

    # When the app's traffic gives the judge evidence and the run waits at the approval gate
    with RolloutClient(db_url, listen=False, refresh_interval=0.2) as client:
        traffic = Traffic(client, "summarizer", candidate=VariantBehaviour(), seed=7)

        def play() -> None:
            if "summarizer" in client.flag_versions():
                traffic.run(150)
                client.flush(timeout=30)

        def status_of(flow_run_id: Any, status: str) -> Any:
            with transaction(engine) as s:
                record = rollout_store.latest_rollout(s, "summarizer")
            return (record if record is not None and str(record.flow_run_id) == str(flow_run_id)
                    and record.state.status.value == status else None)

        try:
            record = wait_until(lambda: status_of(run.id, "awaiting_approval"), 240, "the approval gate", between=play)
        except AssertionError:
            shoot(browser, "x-no-approval-gate")
            raise AssertionError(f"no approval gate; the runs: {runs_of(deployment)}; serve.log ends:\n"
                                 f"{tail(OUT / 'serve.log')}") from None
    assert record.plan["stages"][1]["approval"] == "required"
    # and the release manager opens the run, presses Resume and rejects with their name and why
    browser.get(f"{ui}/runs/flow-run/{run.id}")
    wait_until(lambda: browser.find_elements(By.XPATH, "//button[normalize-space()='Resume']"), 60, "the Resume button")
    click(browser, "Resume")
    modal = browser.find_element(By.XPATH, "//div[contains(@class,'p-modal')]")
    choose(modal, "Decision", "reject")
    type_into(modal, "Comment", "support tickets up")
    type_into(modal, "Approver", "Grace\t")  # leave the field: the form re-validates before the click
    time.sleep(1)
    shoot(browser, "12-reject-form")
    click(modal, "Submit")
    # Then the rollout is rolled back as the plan says for a rejection, and the run ends RolledBack
    browser.implicitly_wait(0)
    last_click = time.monotonic()

    def click_again_if_still_open() -> None:  # as in the first test: a click lost while the form re-validated
        nonlocal last_click
        modals = browser.find_elements(By.XPATH, "//div[contains(@class,'p-modal')]")
        if time.monotonic() - last_click > 20 and modals:
            try:
                click(modals[0], "Submit")
            except Exception:  # noqa: BLE001 - the form closed between the look and the click
                pass
            last_click = time.monotonic()

    rejected = wait_until(lambda: status_of(run.id, "rolled_back"), 180, "the rejection", every=1,
                          between=click_again_if_still_open)
    browser.implicitly_wait(15)
    assert "rejected by Grace" in rejected.state.reason, rejected.state.reason
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "summarizer")
        audit = flag_store.audit_log(s, "summarizer")
        approvals = rollout_store.approvals(s, rejected.id)
    assert flag.phase.value == "rolled_back" and set(flag.allocations.values()) == {0}, flag
    # and the flag serves everyone the baseline, and the audit log names who rejected it
    with RolloutClient(db_url, listen=False) as client:
        assert {client.assign("summarizer", f"user-{i}", {}).variant for i in range(50)} == {"current"}
    assert [(a.approved, a.approver, a.comment) for a in approvals] == [(False, "Grace", "support tickets up")]
    assert any(e.actor == "Grace" and e.action == "rollout.reject" for e in audit), audit
    ended = wait_until(lambda: (r := flow_run(run.id)).state.is_final() and r, 120, "the rejected run to end")
    assert ended.state.name == "RolledBack" and "rejected by Grace" in ended.state.message, ended.state

    # When they start the plan again by name, now, and the candidate is live at the canary stage
    # (In the no-mouse browser this second by-name Submit showed "Oops. Something went wrong." and created no run;
    # from the desktop browser, as the first by-name start, it works.)
    with desktop_chromium() as desktop:
        open_run_form_by_name(desktop, ui, deployment, "summarizer-walk")
        again = submit_new_run(desktop, deployment)
    ramping = wait_until(lambda: status_of(again.id, "ramping"), 180, "the second run to ramp", every=1)
    with transaction(engine) as s:
        assert set(flag_store.get_flag(s, "summarizer").allocations.values()) == {3000}  # basis points: 30 %
    # and they press Cancel on its run page and confirm in Prefect's dialog
    browser.get(f"{ui}/runs/flow-run/{again.id}")
    wait_until(lambda: browser.find_elements(By.XPATH, "//button[normalize-space()='Cancel']"), 60, "the Cancel button")
    click(browser, "Cancel")
    dialog = wait_until(lambda: next((m for m in browser.find_elements(By.XPATH, "//div[contains(@class,'p-modal')]")
                                      if "Cancel Flow Run" in m.text), None), 30, "Prefect's cancel dialog")
    shoot(browser, "13-cancel-dialog")
    click(dialog, "Confirm")
    # Then the plan's on_abort puts everyone back on the baseline and the rollout is aborted
    aborted = wait_until(lambda: status_of(again.id, "aborted"), 120, "the abort", every=1)
    assert aborted.id == ramping.id and "cancel" in aborted.state.reason.lower(), aborted.state
    with transaction(engine) as s:
        flag = flag_store.get_flag(s, "summarizer")
    assert flag.phase.value == "rolled_back" and set(flag.allocations.values()) == {0}, flag

    # and the run's log says so in one WARNING line
    def said() -> list[Any]:
        with get_client(sync_client=True) as prefect:
            logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[again.id])))
        return [log for log in logs if "was applied" in log.message]

    lines = wait_until(said, 60, "the on_abort line in the run's log")
    assert [(log.level, log.message) for log in lines] == [(30, (
        "flow run cancelled: the rollout is aborted and the plan's on_abort (rollback) was applied: "
        "the flag summarizer serves everyone the baseline (current) again"))]
    assert flow_run(again.id).state.name in ("Cancelling", "Cancelled")
    browser.get(f"{ui}/runs/flow-run/{again.id}")
    wait_until(lambda: "was applied" in browser.page_source, 60, "the run page's logs")
    shoot(browser, "14-cancelled-run")
    engine.dispose()
