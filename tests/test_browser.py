"""The job page in a real browser (Playwright driving Debian's chromium) against a real
gunicorn: the live tail over Server-Sent Events, earlier lines, line permalinks, follow
mode, cancel, and that job output is only ever shown as text.

Runs are created queued in this process and started once the page is open, so the page
sees every line arrive live: gunicorn follows them through the database, the way a viewer
follows a run of another process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.launcher import create_run
from jobs.models import Job, JobStatus, LogLine, LogStream
from tests.conftest import WAIT, LiveServer, enqueue, missing_tool, wait_finished

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
expect.set_options(timeout=WAIT * 1000)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    missing_tool("browser tests need Debian's chromium: apt-get install chromium")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WAIT_MS = WAIT * 1000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Playwright's sync API runs an event loop in this thread, and Django refuses database
    # calls while one runs; the tests' own queries are plain sync code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
            )
            yield browser
            browser.close()
    finally:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


def new_page(browser: Any, server: LiveServer, session_cookie: str, errors: list[str], **options: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    if session_cookie:  # else the test logs in itself
        name, value = session_cookie.split("=", 1)
        context.add_cookies([{"name": name, "value": value, "url": server.url}])
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


@pytest.fixture
def page(browser: Any, live_server_gunicorn: LiveServer, session_cookie: str) -> Iterator[Any]:
    errors: list[str] = []
    page = new_page(browser, live_server_gunicorn, session_cookie, errors)
    yield page
    page.context.close()
    # A script error on the page fails the test that caused it.
    assert errors == []


@pytest.fixture
def server(live_server_gunicorn: LiveServer) -> LiveServer:
    return live_server_gunicorn


def queued(name: str, **params: Any) -> Job:
    """A run that waits for `begin()`: open its page first, so every line arrives live."""
    return create_run(name, params)


def begin(job: Job) -> None:
    enqueue(job)


def open_job(page: Any, server: LiveServer, job: Job, fragment: str = "") -> None:
    page.goto(f"{server.url}{job.get_absolute_url()}{fragment}")


def shown_numbers(page: Any) -> list[int]:
    return page.eval_on_selector_all("#log .ln", "links => links.map((link) => Number(link.textContent))")


def at_bottom(page: Any) -> bool:
    return page.eval_on_selector("#log-scroll", "el => el.scrollHeight - el.scrollTop - el.clientHeight < 2")


def background(page: Any, line: str) -> str:
    return page.eval_on_selector(line, "link => getComputedStyle(link.parentElement).backgroundColor")


def stored_lines(job: Job, count: int, stream: str = LogStream.STDOUT) -> None:
    LogLine.objects.bulk_create(
        LogLine(job=job, number=number, stream=stream, text=f"stored line {number}") for number in range(1, count + 1)
    )
    Job.objects.filter(pk=job.pk).update(line_count=count, status=JobStatus.SUCCEEDED)


def test_live_log_follows_a_run_to_its_end(page: Any, server: LiveServer) -> None:
    job = queued("demo.count", n=30, interval=0.02)
    open_job(page, server, job)
    expect(page.locator("#status-badge")).to_have_text("Queued")
    expect(page.locator("#live")).to_have_text("Live")
    begin(job)
    expect(page.locator("#status-badge")).to_have_text("Succeeded")
    expect(page.locator("#log .line").last).to_contain_text("Done")
    assert shown_numbers(page) == list(range(1, 32))
    assert page.inner_text("#L1 + .tx") == "Task #0"
    # The facts follow the run: progress, times, duration, line count; nothing left to cancel.
    assert page.eval_on_selector("#progress", "bar => [bar.value, bar.max]") == [30, 30]
    expect(page.locator("#progress-text")).to_have_text("30 / 30")
    expect(page.locator("#line-count")).to_have_text("31")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page.inner_text("time[data-field=finished_at]"))
    assert page.inner_text("#duration").endswith(" s")
    expect(page.locator("#cancel-form")).to_be_hidden()
    expect(page.locator("#live")).to_be_hidden()
    expect(page.locator("#follow-text")).to_have_count(0)
    assert at_bottom(page)


def test_output_is_shown_as_text_never_as_html(page: Any, server: LiveServer) -> None:
    payload = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    job = queued("demo.echo", text=payload, times=2)
    open_job(page, server, job)
    begin(job)
    expect(page.locator("#status-badge")).to_have_text("Succeeded")
    # Live lines, then the same lines rendered by the server.
    for _ in range(2):
        assert page.locator("#log .tx").all_inner_texts()[:2] == [payload, payload]
        assert page.locator("#log img, #log script").count() == 0
        assert page.evaluate("window.pwned") is None
        page.reload()


def test_live_tail_keeps_the_dom_bounded(page: Any, server: LiveServer) -> None:
    job = queued("demo.flood", lines=20_000, width=20)
    open_job(page, server, job)
    begin(job)
    expect(page.locator("#status-badge")).to_have_text("Succeeded")
    expect(page.locator("#L20000")).to_be_attached()
    numbers = shown_numbers(page)
    assert numbers == list(range(numbers[0], 20_001))
    assert len(numbers) <= 5000
    expect(page.locator("#earlier-text")).to_have_text(f"{numbers[0] - 1} earlier lines not shown.")
    assert at_bottom(page)


def test_scrolling_up_stops_following_until_follow_is_clicked(page: Any, server: LiveServer) -> None:
    job = queued("demo.count", n=150, interval=0.03)
    open_job(page, server, job)
    begin(job)
    expect(page.locator("#L60")).to_be_attached()
    page.eval_on_selector("#log-scroll", "el => { el.scrollTop = 0; }")
    expect(page.locator("#follow")).to_be_visible()
    expect(page.locator("#L100")).to_be_attached()
    # New lines arrived, and the view stayed where the reader put it.
    assert page.eval_on_selector("#log-scroll", "el => el.scrollTop") == 0
    page.click("#follow")
    expect(page.locator("#follow")).to_be_hidden()
    expect(page.locator("#status-badge")).to_have_text("Succeeded")
    assert at_bottom(page)
    expect(page.locator("#follow")).to_have_text("↓ Jump to end")


def test_earlier_lines_load_above_without_moving_the_view(page: Any, server: LiveServer) -> None:
    job = create_run("demo.count", {})
    stored_lines(job, 2500)
    open_job(page, server, job)
    assert shown_numbers(page) == list(range(501, 2501))
    page.eval_on_selector("#log-scroll", "el => { el.scrollTop = 0; }")
    before = page.eval_on_selector("#L501", "el => el.getBoundingClientRect().top")
    page.click("#earlier-button")
    expect(page.locator("#L1")).to_be_attached()
    assert shown_numbers(page) == list(range(1, 2501))
    assert page.eval_on_selector("#L501", "el => el.getBoundingClientRect().top") == pytest.approx(before, abs=1)
    expect(page.locator("#earlier")).to_be_hidden()


def test_line_permalinks_highlight_and_load_their_line(page: Any, server: LiveServer) -> None:
    job = create_run("demo.count", {})
    stored_lines(job, 2500)
    open_job(page, server, job, "#L10")
    expect(page.locator("#L10").locator("xpath=..")).to_have_class(re.compile(r"\bhighlight\b"))
    expect(page.locator("#L10")).to_be_in_viewport()
    assert shown_numbers(page) == list(range(1, 2501))
    # Clicking a line number makes it the permalink.
    page.click("#L2400")
    assert page.url.endswith("#L2400")
    expect(page.locator("#L2400").locator("xpath=..")).to_have_class(re.compile(r"\bhighlight\b"))
    expect(page.locator(".line.highlight")).to_have_count(1)
    assert background(page, "#L10") == background(page, "#L11")


def test_a_far_line_permalink_loads_a_window_around_it(page: Any, server: LiveServer) -> None:
    job = create_run("demo.count", {})
    stored_lines(job, 15_000)
    open_job(page, server, job, "#L100")
    expect(page.locator("#L100").locator("xpath=..")).to_have_class(re.compile(r"\bhighlight\b"))
    expect(page.locator(".log-gap")).to_have_text("Lines 2050–13000 are not shown here; see the raw log.")
    numbers = shown_numbers(page)
    assert numbers == [*range(50, 2050), *range(13_001, 15_001)]
    expect(page.locator("#earlier-text")).to_have_text("49 earlier lines not shown.")


def test_cancel_stops_the_run_without_leaving_the_page(page: Any, server: LiveServer) -> None:
    job = queued("demo.count", n=1000, interval=0.1)
    open_job(page, server, job)
    begin(job)
    expect(page.locator("#L3")).to_be_attached()
    url = page.url
    page.click("#cancel-form button")
    expect(page.locator("#status-badge")).to_have_text("Cancelled")
    assert page.url == url
    expect(page.locator("#cancel-form")).to_be_hidden()
    assert wait_finished(job).status == JobStatus.CANCELLED


def test_a_stream_that_fails_is_opened_again(page: Any, server: LiveServer) -> None:
    """A stream answered with an error (a server restarting) is closed for good by the
    browser; the page asks for the status and opens a new one from its last line."""
    failures = []

    def fail_once(route: Any) -> None:
        if not failures:
            failures.append(route.request.url)
            route.fulfill(status=503, body="restarting")
        else:
            route.continue_()

    page.route("**/events?*", fail_once)
    job = queued("demo.count", n=5, interval=0.02)
    open_job(page, server, job)
    expect(page.locator("#live")).to_have_text("Reconnecting…")
    begin(job)
    expect(page.locator("#status-badge")).to_have_text("Succeeded")
    assert shown_numbers(page) == list(range(1, 7))
    assert len(failures) == 1


def test_the_page_shows_the_stored_log_without_javascript(
    browser: Any, server: LiveServer, session_cookie: str
) -> None:
    job = create_run("demo.count", {})
    stored_lines(job, 2100)
    page = new_page(browser, server, session_cookie, [], java_script_enabled=False)
    open_job(page, server, job, "#L2000")
    assert shown_numbers(page) == list(range(101, 2101))
    assert background(page, "#L2000") != background(page, "#L1999")
    expect(page.locator("#earlier-text")).to_have_text("100 earlier lines not shown.")
    expect(page.locator("#earlier-button")).to_be_hidden()
    expect(page.locator("#earlier a", has_text="Raw log")).to_be_visible()
    page.context.close()


def test_a_job_launched_from_the_admin_streams_live_on_its_page(
    browser: Any, server: LiveServer, staff_user: Any, tmp_path: Path
) -> None:
    """The whole path a staff user takes: log in, Launch a job, fill the form, land on the
    job page, watch the lines arrive (the job runs in the gunicorn worker that served the
    launch), see it succeed, open a line's permalink."""
    errors: list[str] = []
    page = new_page(browser, server, "", errors)
    page.goto(f"{server.url}/admin/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "staff-password")
    page.click("input[type=submit]")
    page.click("a[href='/admin/jobs/job/']")
    page.click("text=Launch a job")
    page.click("a[href$='/launch/demo.count/']")
    page.fill("#id_n", "40")
    page.fill("#id_interval", "0.05")
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    expect(page.locator("#L1")).to_be_attached()
    # The first lines are on the page while the job is still printing the rest.
    assert page.locator("#status-badge").inner_text() in ("Queued", "Running")
    expect(page.locator("#status-badge")).to_have_text("Succeeded")
    assert shown_numbers(page) == list(range(1, 42))
    screenshot = Path(os.environ.get("RUNLOG_SCREENSHOT", tmp_path / "job-page.png"))
    page.screenshot(path=str(screenshot))
    page.goto(page.url + "#L7")
    page.reload()
    expect(page.locator("#L7").locator("xpath=..")).to_have_class(re.compile(r"\bhighlight\b"))
    assert page.inner_text("#L7 + .tx") == "Task #6"
    page.context.close()
    assert errors == []
