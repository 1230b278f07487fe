"""The dashboard in a real browser: headless Chromium (Debian's) driven by Selenium, on
`ardiq dashboard` serving a seeded queue.

What a person does with it: read the overview's counts, open a task by its id, replay a
dead letter and see it run, watch the counts move while a worker drains the queue, sign
in when a token is set (and be refused without it), and see a task name made of markup
shown as text. Screenshots of the main pages land in .tmp/screenshots/<test>/.

No browser is downloaded: without /usr/bin/chromium and /usr/bin/chromedriver these
tests fail and say what to install (.ci/run installs them).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
from ardiq import Ardiq
from support.browser import (
    PrefixProxy,
    browser_errors,
    missing_browser,
    screenshot_dir,
    start_chromium,
    wait_for,
)
from support.dashboard import DashboardProcess
from support.ops_cli import binary, env_for
from support.workers import TESTS, WorkerProcess

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

LANES = ["low", "default", "high"]
OPS_APP = "apps.ops_app:app"  # knows `ok` and `fails`; not `count` (see the replay test)
MARKUP = "<img src=x onerror=window.__ardiq_injected=1>"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def browser(
    tmp_path: Path, request: pytest.FixtureRequest, dashboards: Callable[..., DashboardProcess]
) -> Iterator[WebDriver]:
    """A fresh headless Chromium. It asks for `dashboards` so that it closes first: a page
    still polling a dashboard that was stopped would log errors."""
    why = missing_browser()
    if why is not None:
        pytest.fail(why)  # a skipped browser test would be a test that never ran
    profile = tmp_path / "chromium"
    profile.mkdir()
    driver = start_chromium(profile)
    driver.implicitly_wait(0)
    shots = screenshot_dir(request.node.name)
    driver.shots = shots  # type: ignore[attr-defined]
    try:
        yield driver
        # Whatever a test did, the page never broke its own CSP or threw.
        assert browser_errors(driver) == []
    finally:
        driver.save_screenshot(str(shots / "last.png"))  # where it ended, passed or not
        driver.quit()


@pytest.fixture
def dashboards(
    redis_url: str, queue: str, tmp_path: Path
) -> Iterator[Callable[..., DashboardProcess]]:
    """Start `ardiq dashboard` on this test's queue: `dashboards("--read-only", token=...)`."""
    started: list[DashboardProcess] = []

    def start(*flags: str, token: str | None = None) -> DashboardProcess:
        d = DashboardProcess(
            redis_url,
            *("--queue", queue, "--lanes", ",".join(LANES), *flags),
            token=token,
            log_dir=tmp_path,
        )
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def burst(redis_url: str, queue: str, target: str = OPS_APP) -> None:
    """Run `target`'s worker over the queue once (the binary, `--burst`)."""
    env = env_for(redis_url, queue)
    out = subprocess.run(
        [binary(), "run", target, "--burst", "--quiet"],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@dataclass
class Seeded:
    dead: list[str]  # `fails`, dead after its retries
    default: list[str]  # `ok` tasks waiting on `default`
    high: str  # one `ok` waiting on `high`
    scheduled: list[str]  # `ok` tasks due in ten minutes


@pytest.fixture
def seeded(redis_url: str, queue: str) -> Seeded:
    """Two dead letters, three tasks waiting on `default`, one on `high`, two scheduled."""
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    try:
        dead = [app.send_sync("fails", f"boom {i}").id for i in range(2)]
        burst(redis_url, queue)
        default = [app.send_sync("ok", i).id for i in range(3)]
        high = app.ref("ok", priority="high").enqueue_sync(9).id
        scheduled = [app.ref("ok").options(delay_ms=600_000).enqueue_sync(i).id for i in range(2)]
    finally:
        app.close_sync()
    return Seeded(dead, default, high, scheduled)


# ------------------------------------------------------------------------------ reading
def queue_card(driver: WebDriver, queue: str) -> WebElement:
    return driver.find_element("css selector", f'section[data-queue="{queue}"]')


def count(scope: WebDriver | WebElement, name: str) -> int | None:
    """The number a count tile (`waiting`, `running`, `scheduled`, `dead`...) shows."""
    found = scope.find_elements("css selector", f'[data-count="{name}"] .tile-value')
    if not found:
        return None
    text = found[0].text.replace(",", "").replace("\u202f", "").strip()
    return int(text) if text.isdigit() else None


def lane_count(scope: WebDriver | WebElement, lane: str, column: str) -> int | None:
    found = scope.find_elements("css selector", f'[data-lane="{lane}"][data-col="{column}"]')
    text = found[0].text.replace(",", "").strip() if found else ""
    return int(text) if text.isdigit() else None


def section(driver: WebDriver, title: str) -> WebElement:
    """A queue or job page's section, by its heading."""
    for s in driver.find_elements("css selector", "section.card"):
        heads = s.find_elements("css selector", "h2")
        if heads and heads[0].text == title:
            return s
    raise AssertionError(f"no section `{title}` on the page")


def chart_summary(scope: WebElement) -> str:
    """The chart's text alternative: per kind, the tasks of the minutes it shows."""
    svg = scope.find_element("css selector", "svg.chart-svg")
    return svg.get_attribute("aria-label") or ""


def shot(driver: WebDriver, name: str) -> None:
    """A screenshot of the whole page, beyond the window (Chromium's DevTools)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    png = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = driver.shots / f"{name}.png"  # type: ignore[attr-defined]
    path.write_bytes(base64.b64decode(png["data"]))


def go(driver: WebDriver, dashboard: DashboardProcess, route: str = "#/") -> None:
    driver.get(dashboard.base + route)


# -------------------------------------------------------------------------------- tests
def test_overview_shows_the_counts_of_a_seeded_queue(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], seeded: Seeded, queue: str
) -> None:
    dash = dashboards()
    go(browser, dash)
    card = wait_for(browser, "the queue's card", lambda d: queue_card(d, queue))
    wait_for(browser, "4 waiting", lambda d: count(queue_card(d, queue), "waiting") == 4)
    card = queue_card(browser, queue)
    assert count(card, "running") == 0
    assert count(card, "scheduled") == 2
    assert count(card, "dead") == 2
    assert lane_count(card, "default", "waiting") == 3
    assert lane_count(card, "high", "waiting") == 1
    assert lane_count(card, "low", "waiting") == 0
    # The throughput chart: each `fails` failed twice before its last attempt failed.
    summary = chart_summary(card)
    assert "2 failed" in summary and "4 retried" in summary, summary
    assert card.find_elements("css selector", "polyline.line-fail")
    shot(browser, "overview")

    # The queue's own page lists what the overview counts.
    card.find_element("link text", queue).click()
    wait_for(browser, "the queue page", lambda d: d.find_elements("css selector", "h1 .mono"))
    scheduled = section(browser, "Scheduled and retries")
    wait_for(
        browser,
        "two scheduled tasks",
        lambda d: len(scheduled.find_elements("css selector", "tbody tr")) == 2,
    )
    dead = section(browser, "Dead letters")
    assert len(dead.find_elements("css selector", "tbody tr")) == 2
    assert "boom" in dead.text
    shot(browser, "queue")


def test_open_a_job_by_id(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], seeded: Seeded, queue: str
) -> None:
    dash = dashboards()
    go(browser, dash)
    wait_for(browser, "the job search", lambda d: d.find_element("id", "job-search").is_displayed())
    task_id = seeded.dead[0]
    browser.find_element("id", "job-search-id").send_keys(task_id)
    browser.find_element("css selector", "#job-search button[type=submit]").click()
    wait_for(
        browser, "the job page", lambda d: task_id in d.find_element("css selector", ".crumbs").text
    )
    head = wait_for(
        browser,
        "the task's name",
        lambda d: (
            "fails" in d.find_element("tag name", "h1").text and d.find_element("tag name", "h1")
        ),
    )
    assert "dead" in head.text
    details = section(browser, "Details").text
    assert task_id in details and "default" in details
    # Each attempt with its error: `fails` allows two retries, so three attempts failed.
    attempts = section(browser, "Attempts")
    rows = wait_for(
        browser,
        "three attempts",
        lambda d: len(r := attempts.find_elements("css selector", "tbody tr")) == 3 and r,
    )
    assert all("boom 0" in r.text for r in rows), [r.text for r in rows]
    # The arguments, decoded by the server, only when asked for.
    args = section(browser, "Arguments")
    assert "boom 0" not in args.text
    args.find_element("tag name", "button").click()
    wait_for(browser, "the arguments", lambda d: "boom 0" in section(d, "Arguments").text)
    shot(browser, "job")

    # An id nobody knows says so.
    go(browser, dash, f"#/queue/{queue}/job/no-such-task")
    wait_for(browser, "not found", lambda d: "not found" in d.find_element("tag name", "h1").text)


def test_replay_a_dead_letter_and_see_it_run(
    browser: WebDriver,
    dashboards: Callable[..., DashboardProcess],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    queue: str,
) -> None:
    # `count` is unknown to the ops app: its burst worker dead-letters it at once.
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    try:
        task_id = app.send_sync("count", 7).id
    finally:
        app.close_sync()
    burst(redis_url, queue)
    dash = dashboards()
    go(browser, dash, f"#/queue/{queue}")
    dead = wait_for(
        browser,
        "the dead letter",
        lambda d: "count" in section(d, "Dead letters").text and section(d, "Dead letters"),
    )
    assert "unknown task" in dead.text
    shot(browser, "dead-letter")

    # Replay it, then let a worker of the app that knows `count` run it.
    dead.find_element("xpath", ".//button[text()='Replay']").click()
    wait_for(
        browser, "no dead letter", lambda d: "No dead letters." in section(d, "Dead letters").text
    )
    wait_for(browser, "it waits", lambda d: count(d, "waiting") == 1)
    worker = start_worker("apps.basic:app")

    def ran(d: WebDriver) -> bool:
        recent = section(d, "Recent tasks").text
        return "count" in recent and "finished" in recent

    wait_for(browser, "it ran", ran, timeout=30)
    assert count(browser, "dead") == 0
    r = redis.Redis.from_url(redis_url)
    try:
        assert r.lrange(f"ledger:{queue}:count", 0, -1) == [b"7"]
    finally:
        r.close()
    shot(browser, "replayed")

    # Its job page tells the whole story: complete, and the attempt that failed.
    go(browser, dash, f"#/queue/{queue}/job/{task_id}")
    wait_for(browser, "complete", lambda d: "complete" in d.find_element("tag name", "h1").text)
    assert "unknown task" in section(browser, "Attempts").text
    worker.stop()


def test_counts_change_live_while_a_worker_drains(
    browser: WebDriver,
    dashboards: Callable[..., DashboardProcess],
    start_worker: Callable[..., WorkerProcess],
    redis_url: str,
    queue: str,
) -> None:
    tasks = 30
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    try:
        for _ in range(tasks):
            app.send_sync("sleep", 0.3)
    finally:
        app.close_sync()
    dash = dashboards()
    go(browser, dash)
    wait_for(browser, f"{tasks} waiting", lambda d: count(queue_card(d, queue), "waiting") == tasks)
    # Marks this page: a reload would lose it, so its survival proves the update was live.
    browser.execute_script("window.__still_the_same_page = true")
    start_worker("apps.basic:app", env={"ARDIQ_TEST_CONCURRENCY": "2", "ARDIQ_TEST_PREFETCH": "2"})
    seen: set[int] = set()  # waiting + pending (not finished yet), as each poll showed it

    def drained(d: WebDriver) -> bool:
        card = queue_card(d, queue)
        waiting, pending = count(card, "waiting"), count(card, "pending")
        if waiting is None or pending is None:
            return False
        seen.add(waiting + pending)
        return waiting + pending == 0

    wait_for(browser, "the queue drained", drained, timeout=60)
    assert browser.execute_script("return window.__still_the_same_page") is True
    # Two at a time, 30 tasks of 0.3 s take about 4.5 s: polls in between (every 2 s)
    # saw the count on its way down.
    assert any(0 < n < tasks for n in seen), seen
    wait_for(
        browser,
        f"{tasks} finished in the chart",
        lambda d: f"{tasks} finished" in (chart_summary(queue_card(d, queue))),
    )
    shot(browser, "drained")


def test_a_token_is_needed_and_the_login_page_asks_for_it(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], seeded: Seeded, queue: str
) -> None:
    token = "correct horse battery staple"
    dash = dashboards(token=token)
    # The API refuses a request without the token, and takes one with it.
    assert dash.get("api/queues").status == 401
    assert dash.get("api/queues", token="wrong").status == 401
    answer = dash.get("api/queues", token=token)
    assert answer.status == 200 and answer.json()["queues"][0]["queue"] == queue

    go(browser, dash)
    wait_for(browser, "the login page", lambda d: d.find_elements("id", "login-token"))
    assert "Sign in" in browser.title
    assert queue not in browser.find_element("tag name", "body").text
    shot(browser, "login")

    browser.find_element("id", "login-token").send_keys("not it")
    browser.find_element("css selector", "form.login button[type=submit]").click()
    wait_for(browser, "the refusal", lambda d: d.find_element("id", "login-failed").is_displayed())

    browser.find_element("id", "login-token").send_keys(token)
    browser.find_element("css selector", "form.login button[type=submit]").click()
    wait_for(browser, "the overview", lambda d: count(queue_card(d, queue), "waiting") == 4)

    # Signing out ends the session: the page is the login page again.
    browser.find_element("css selector", "#sign-out button").click()
    wait_for(browser, "the login page again", lambda d: d.find_elements("id", "login-token"))
    go(browser, dash, f"#/queue/{queue}")
    wait_for(browser, "still the login page", lambda d: d.find_elements("id", "login-token"))


def test_a_task_name_made_of_markup_is_shown_as_text(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], redis_url: str, queue: str
) -> None:
    app = Ardiq(redis_url=redis_url, queue_name=queue, priorities=LANES)
    try:
        scheduled = app.ref(MARKUP).options(delay_ms=600_000).enqueue_sync().id
        dead = app.send_sync(MARKUP).id
    finally:
        app.close_sync()
    burst(redis_url, queue)  # unknown task: the error names it, markup and all
    dash = dashboards()
    go(browser, dash, f"#/queue/{queue}")
    wait_for(
        browser, "the scheduled task", lambda d: MARKUP in section(d, "Scheduled and retries").text
    )
    wait_for(browser, "the dead letter", lambda d: MARKUP in section(d, "Dead letters").text)
    assert f"unknown task '{MARKUP}'" in section(browser, "Dead letters").text
    go(browser, dash, f"#/queue/{queue}/job/{scheduled}")
    wait_for(browser, "the job page", lambda d: MARKUP in d.find_element("tag name", "h1").text)
    go(browser, dash, f"#/queue/{queue}/job/{dead}")
    wait_for(
        browser, "the dead job's page", lambda d: MARKUP in d.find_element("tag name", "h1").text
    )
    assert browser.find_elements("tag name", "img") == []
    assert browser.execute_script("return window.__ardiq_injected") is None
    shot(browser, "markup")


def test_read_only_shows_no_action(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], seeded: Seeded, queue: str
) -> None:
    dash = dashboards("--read-only")
    go(browser, dash, f"#/queue/{queue}")
    wait_for(browser, "the dead letters", lambda d: "boom" in section(d, "Dead letters").text)
    wait_for(
        browser,
        "the scheduled tasks",
        lambda d: (
            len(section(d, "Scheduled and retries").find_elements("css selector", "tbody tr")) == 2
        ),
    )
    assert "Read-only" in browser.find_element("id", "mode").text
    for label in ("Replay", "Delete", "Run now", "Purge queue"):
        assert browser.find_elements("xpath", f"//button[text()='{label}']") == [], label
    assert browser.find_elements("css selector", "form.purge") == []
    go(browser, dash, f"#/queue/{queue}/job/{seeded.dead[0]}")
    wait_for(browser, "the dead job", lambda d: "dead" in d.find_element("tag name", "h1").text)
    assert browser.find_elements("xpath", "//button[text()='Replay']") == []
    # And the server refuses the action anyway.
    assert dash.action(f"api/queues/{queue}/dead/{seeded.dead[0]}/replay").status == 403


def test_run_a_scheduled_task_now_then_purge_the_queue(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], seeded: Seeded, queue: str
) -> None:
    dash = dashboards()
    go(browser, dash, f"#/queue/{queue}")
    scheduled = wait_for(
        browser,
        "two scheduled tasks",
        lambda d: (
            len(section(d, "Scheduled and retries").find_elements("css selector", "tbody tr")) == 2
            and section(d, "Scheduled and retries")
        ),
    )
    scheduled.find_element("xpath", ".//button[text()='Run now']").click()
    wait_for(browser, "one left scheduled", lambda d: count(d, "scheduled") == 1)
    wait_for(browser, "five waiting", lambda d: count(d, "waiting") == 5)

    # Purge asks for the queue's name first.
    purge = section(browser, "Purge")
    button = purge.find_element("css selector", "button[type=submit]")
    assert not button.is_enabled()
    field = purge.find_element("css selector", "input[type=text]")
    field.send_keys("not-the-queue")
    assert not button.is_enabled()
    field.clear()
    field.send_keys(queue)
    assert button.is_enabled()
    shot(browser, "purge")
    button.click()
    wait_for(
        browser,
        "the purge's report",
        lambda d: "Purged 6 tasks" in d.find_element("id", "status").text,
    )
    wait_for(
        browser, "an empty queue", lambda d: count(d, "waiting") == 0 and count(d, "scheduled") == 0
    )
    assert count(browser, "dead") == 2  # purge leaves the dead letters


def test_served_under_a_reverse_proxy_prefix(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], seeded: Seeded, queue: str
) -> None:
    token = "behind-the-proxy"
    proxy = PrefixProxy(dashboards(token=token).base, prefix="ardiq")
    try:
        browser.get(proxy.base)
        wait_for(browser, "the login page", lambda d: d.find_elements("id", "login-token"))
        assert browser.current_url.startswith(proxy.base)
        browser.find_element("id", "login-token").send_keys(token)
        browser.find_element("css selector", "form.login button[type=submit]").click()
        wait_for(browser, "the overview", lambda d: count(queue_card(d, queue), "waiting") == 4)
        assert browser.current_url.startswith(proxy.base)
        queue_card(browser, queue).find_element("link text", queue).click()
        dead = wait_for(
            browser,
            "the dead letters",
            lambda d: "boom" in section(d, "Dead letters").text and section(d, "Dead letters"),
        )
        dead.find_element("xpath", ".//button[text()='Replay']").click()
        wait_for(browser, "one dead letter left", lambda d: count(d, "dead") == 1)
    finally:
        proxy.close()


def test_polling_pauses_while_the_tab_is_hidden(
    browser: WebDriver, dashboards: Callable[..., DashboardProcess], seeded: Seeded, queue: str
) -> None:
    dash = dashboards()
    go(browser, dash)
    wait_for(browser, "the overview", lambda d: count(queue_card(d, queue), "waiting") == 4)
    # Count the page's requests, and those made while it is hidden.
    browser.execute_script(
        """
        window.__calls = 0; window.__calls_hidden = 0; window.__was_hidden = false;
        document.addEventListener("visibilitychange", () => {
          if (document.hidden) window.__was_hidden = true;
        });
        const fetch = window.fetch;
        window.fetch = (...args) => {
          window.__calls += 1;
          if (document.hidden) window.__calls_hidden += 1;
          return fetch(...args);
        };
        """
    )
    page = browser.current_window_handle
    browser.switch_to.new_window("tab")  # the dashboard's tab is hidden now
    time.sleep(5)  # two polls' worth
    browser.switch_to.window(page)
    hidden, was_hidden = browser.execute_script(
        "return [window.__calls_hidden, window.__was_hidden]"
    )
    assert was_hidden is True and hidden == 0
    # Visible again: it polls again (at once, then every 2 s).
    wait_for(browser, "polling again", lambda d: d.execute_script("return window.__calls") >= 2)


def test_a_job_page_shows_progress_live(
    browser: WebDriver,
    dashboards: Callable[..., DashboardProcess],
    seeded: Seeded,
    redis_url: str,
    queue: str,
) -> None:
    # The record a running task's `progress()` leaves (PROTOCOL.md, Progress), written
    # here by hand: what is tested is the page reading it, not the worker writing it.
    key = f"ardiq:{{{queue}}}:progress:{seeded.high}"
    r = redis.Redis.from_url(redis_url)

    def report(value: object, message: str) -> None:
        record = {"v": value, "m": message, "t": 1, "at": int(time.time() * 1000)}
        r.set(key, json.dumps(record))

    try:
        report(40, "<b>step</b> 2 of 5")
        dash = dashboards()
        go(browser, dash, f"#/queue/{queue}/job/{seeded.high}")
        bar = wait_for(
            browser,
            "the progress bar",
            lambda d: d.find_elements("css selector", "progress") or None,
        )[0]
        assert bar.get_attribute("value") == "40"
        progress = section(browser, "Progress")
        assert "<b>step</b> 2 of 5" in progress.text
        assert progress.find_elements("tag name", "b") == []
        shot(browser, "progress")
        # A new report shows without a reload; a mapping is shown as JSON text.
        report({"rows": 1200, "of": 5000}, "copying")
        wait_for(browser, "the new report", lambda d: '"rows": 1200' in section(d, "Progress").text)
        assert browser.find_elements("css selector", "progress") == []
    finally:
        r.close()
