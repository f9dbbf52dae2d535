"""The job page as a good citizen of a browser and a server: a hidden tab gives its stream
back and resumes at its line, a stream refused for capacity waits and comes back, and many
tabs of one browser share one HTTP/2 connection through nginx (deploy/nginx), so that the
browser's few connections per server are never all taken by streams.

Runs are "running" runs of no process whose lines the test writes and announces, as their
process would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs.models import Job, JobStatus
from tests import test_browser
from tests.conftest import (
    PROJECT_DIR,
    LiveServer,
    free_port,
    missing_tool,
    running_run,
    start_gunicorn,
    start_nginx,
    stop_process,
    stop_server,
    wait_for,
)
from tests.test_browser import WAIT_MS, end_run, expect, open_job, shown_numbers, write_lines

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.xdist_group("test_browser_tabs")]

#: Chromium, one per module, as test_browser starts it (pytest finds a fixture by its name here).
browser = test_browser.browser

EVENTS = re.compile(r"/jobs/[0-9a-f-]+/events\?")


def lines(first: int, last: int) -> list[str]:
    return [f"line {n}" for n in range(first, last + 1)]


def set_hidden(page: Any, hidden: bool) -> None:
    """Hide or show the tab, as switching tabs does: headless pages are always visible, so
    the document's visibility is overridden and its change announced."""
    page.evaluate(
        """hidden => {
            for (const [name, value] of [["hidden", hidden], ["visibilityState", hidden ? "hidden" : "visible"]]) {
                Object.defineProperty(document, name, { configurable: true, get: () => value });
            }
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def is_stream(request: Any) -> bool:
    return EVENTS.search(request.url) is not None


def end_and_expect_every_line(tab: Any, run: Job) -> None:
    """End the run; its tab shows that, and each of its lines once, in order."""
    end_run(run, JobStatus.SUCCEEDED)
    expect(tab.locator("#status-badge")).to_have_text("Succeeded")
    run.refresh_from_db()
    assert tab.locator("#log .tx").all_inner_texts() == lines(1, run.line_count)
    assert shown_numbers(tab) == list(range(1, run.line_count + 1))


@pytest.fixture
def one_stream_server(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[LiveServer]:
    """One worker that serves a single live stream at a time and tells the streams it
    refuses to come back in a second."""
    env = {**subprocess_env, "RUNLOG_MAX_STREAMS": "1", "RUNLOG_STREAM_RETRY_AFTER": "1"}
    server = start_gunicorn(env, tmp_path / "gunicorn.log", "--workers", "1")
    yield server
    stop_server(server)


class Window:
    """A browser window (a Playwright context) whose tabs are signed in to `url`; the
    script errors of its tabs are collected."""

    def __init__(self, browser: Any, url: str, session_cookie: str, **options: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
        name, value = session_cookie.split("=", 1)
        self.context.add_cookies([{"name": name, "value": value, "url": url}])
        self.errors: list[str] = []

    def tab(self) -> Any:
        tab = self.context.new_page()
        tab.set_default_timeout(WAIT_MS)
        tab.on("pageerror", lambda error: self.errors.append(str(error)))
        return tab


@pytest.fixture
def window(browser: Any, session_cookie: str) -> Iterator[Callable[..., Window]]:
    """Opens windows on a server; a script error on any of their tabs fails the test."""
    windows: list[Window] = []

    def open_window(url: str, **options: Any) -> Window:
        windows.append(Window(browser, url, session_cookie, **options))
        return windows[-1]

    yield open_window
    for opened in windows:
        opened.context.close()
    assert [error for opened in windows for error in opened.errors] == []


def test_a_hidden_tab_gives_its_stream_back_and_resumes_at_its_line(
    window: Callable[..., Window], one_stream_server: LiveServer
) -> None:
    watched, other = running_run(), running_run()
    write_lines(watched, lines(1, 3))
    browser_window = window(one_stream_server.url)
    tab = browser_window.tab()
    open_job(tab, one_stream_server, watched)
    expect(tab.locator("#live")).to_have_text("Live")
    write_lines(watched, lines(4, 5))
    expect(tab.locator("#L5")).to_be_attached()

    with tab.expect_event("requestfailed", is_stream):  # the page dropped its stream
        set_hidden(tab, True)
    expect(tab.locator("#live")).to_have_text("Paused while hidden")
    # The server has the stream back: it serves another tab, its only stream.
    second = browser_window.tab()
    open_job(second, one_stream_server, other)
    expect(second.locator("#live")).to_have_text("Live")
    write_lines(other, lines(1, 2))
    expect(second.locator("#L2")).to_be_attached()
    second.close()

    write_lines(watched, lines(6, 9))
    with tab.expect_request(is_stream) as resumed:
        set_hidden(tab, False)
    assert "offset=5" in resumed.value.url  # from the last line it has, no line sent twice
    expect(tab.locator("#live")).to_have_text("Live")
    expect(tab.locator("#L9")).to_be_attached()
    write_lines(watched, lines(10, 10))
    end_and_expect_every_line(tab, watched)


def test_a_stream_refused_for_capacity_waits_and_comes_back_when_there_is_room(
    window: Callable[..., Window], one_stream_server: LiveServer
) -> None:
    first_run, second_run = running_run(), running_run()
    browser_window = window(one_stream_server.url)
    first = browser_window.tab()
    open_job(first, one_stream_server, first_run)
    expect(first.locator("#live")).to_have_text("Live")

    refusals: list[tuple[int, str | None]] = []

    def note_refusal(response: Any) -> None:
        if is_stream(response.request) and response.status != 200:
            refusals.append((response.status, response.headers.get("retry-after")))

    second = browser_window.tab()
    second.on("response", note_refusal)
    open_job(second, one_stream_server, second_run)
    expect(second.locator("#live")).to_have_text("Waiting for a free stream…")
    assert refusals and set(refusals) == {(503, "1")}
    write_lines(second_run, lines(1, 3))

    first.close()  # a viewer leaves: its stream is free
    expect(second.locator("#live")).to_have_text("Live")
    expect(second.locator("#L3")).to_be_attached()
    write_lines(second_run, lines(4, 5))
    end_and_expect_every_line(second, second_run)


# --- Many tabs: HTTP/2 through nginx ---------------------------------------------------------

#: The production proxy rules (deploy/nginx/proxy.conf) in a TLS server with HTTP/2, as
#: deploy/nginx/runlog.conf has them, on the test's port and certificate.
HTTPS_PROXY = """\
    upstream runlog {{ server {upstream}; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        include {project}/deploy/nginx/proxy.conf;
    }}
"""


@pytest.fixture
def https_server(subprocess_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, nginx's access log) of nginx serving HTTPS and HTTP/2 with a self-signed
    certificate, in front of gunicorn."""
    if shutil.which("openssl") is None:
        missing_tool("openssl is not installed (apt-get install openssl)")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    upstream = start_gunicorn({**subprocess_env, "BEHIND_HTTPS_PROXY": "True"}, tmp_path / "gunicorn.log")
    try:
        port = free_port()
        address = upstream.url.removeprefix("http://")
        servers = HTTPS_PROXY.format(tmp=tmp_path, port=port, upstream=address, project=PROJECT_DIR)
        nginx = start_nginx(tmp_path, port, servers)
        yield f"https://127.0.0.1:{port}", tmp_path / "nginx-access.log"
        stop_process(nginx)
    finally:
        stop_server(upstream)


TABS = 10


def test_ten_job_pages_in_one_browser_leave_the_admin_usable(
    window: Callable[..., Window], https_server: tuple[str, Path]
) -> None:
    url, access_log = https_server
    browser_window = window(url, ignore_https_errors=True)
    runs = [running_run() for _ in range(TABS)]
    tabs = []
    for run in runs:
        tabs.append(browser_window.tab())
        tabs[-1].goto(f"{url}{run.get_absolute_url()}")
    for tab in tabs:
        expect(tab.locator("#live")).to_have_text("Live")
    # Ten streams open, and pages still load: the admin and the list of runs.
    other = browser_window.tab()
    other.goto(f"{url}/admin/")
    expect(other.locator("#site-name")).to_be_visible()
    other.goto(f"{url}/jobs/")
    expect(other.locator("h1")).to_have_text("Jobs")
    # Every tab follows its run live.
    for index, run in enumerate(runs):
        write_lines(run, [f"run {index} line 1", f"run {index} line 2"])
    for index, tab in enumerate(tabs):
        expect(tab.locator("#L2 + .tx")).to_have_text(f"run {index} line 2")
    browser_window.context.close()

    # nginx logs a request once it has ended: the streams, once the tabs closed.
    def logged() -> list[str] | None:
        served = access_log.read_text().splitlines()
        return served if sum("/events?" in line for line in served) >= TABS else None

    served = wait_for(logged, "nginx to log the streams")
    assert all(line.startswith("HTTP/2.0 ") for line in served), served
