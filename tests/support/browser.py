"""A headless Chromium driven by Selenium, for the dashboard's browser tests (the
dashboard processes themselves: tests/support/dashboard.py).

The browser is Debian's (`chromium` and `chromium-driver`, installed by `.ci/run` when
missing): Selenium is given both paths, so Selenium Manager never looks for (or
downloads) a browser or a driver. A machine without them fails the browser tests with a
message saying what to install; it never skips them.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .workers import ROOT

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path(os.environ.get("ARDIQ_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ARDIQ_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))

# Screenshots of the main pages, for people to look at (not compared): one folder per
# test, under the repository's ignored .tmp/.
SCREENSHOTS = ROOT / ".tmp" / "screenshots"

INSTALL_HINT = (
    "the browser tests need Debian's Chromium and its driver: "
    "`apt-get install -y chromium chromium-driver` (.ci/run installs them when missing)"
)

T = TypeVar("T")


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"`{path}` is missing: {INSTALL_HINT}"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: `pip install -e '.[dev]'` (make venv)"
    return None


def start_chromium(profile: Path, width: int = 1280, height: int = 900) -> WebDriver:
    """A headless Chromium with a fresh profile (no cookie from another test)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--force-prefers-reduced-motion",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    # Console messages (a Content-Security-Policy violation, a script error) are read back.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(profile / "driver.log"))
    return webdriver.Chrome(service=service, options=options)


def wait_for(
    driver: WebDriver, what: str, check: Callable[[WebDriver], T | bool | None], timeout: float = 20
) -> T:
    """Polls `check` until it returns something truthy; fails naming `what` and showing
    the page's text otherwise. A page that re-renders between finding an element and
    reading it is simply asked again."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
    )

    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check(driver)
            if value:
                return value  # type: ignore[return-value]
            last = value
        except (StaleElementReferenceException, NoSuchElementException) as e:
            last = e
        if time.monotonic() > deadline:
            body = driver.find_element("tag name", "body").text
            pytest.fail(f"timed out waiting for {what} (last: {last!r}); the page says:\n{body}")
        time.sleep(0.1)


def browser_errors(driver: WebDriver) -> list[str]:
    """Script errors and Content-Security-Policy violations logged since the last call.
    An HTTP error status (the API's 404 for an unknown task, a missing favicon) is not
    one: the tests check statuses where they matter."""
    logs: list[dict[str, Any]] = driver.get_log("browser")
    return [
        e["message"]
        for e in logs
        if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]
    ]


def screenshot_dir(test_name: str) -> Path:
    """Where a test's screenshots go (made empty first)."""
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    return folder


class PrefixProxy:
    """A reverse proxy in a thread that serves the dashboard under `/<prefix>/`, as the
    README's nginx example does: it strips the prefix and passes everything else through
    (cookies, redirects, the action header), so the page works only if every URL it uses
    is relative."""

    def __init__(self, upstream: str, prefix: str = "ardiq") -> None:
        import http.server
        import threading

        self.prefix = f"/{prefix}/"
        upstream = upstream.rstrip("/")
        strip = self.prefix

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def forward(self) -> None:
                if not self.path.startswith(strip):
                    self.send_error(404, "outside the proxied prefix")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                request = urllib.request.Request(
                    upstream + "/" + self.path[len(strip) :],
                    data=body,
                    method=self.command,
                    headers=headers,
                )
                try:
                    answer = opener.open(request, timeout=30)
                except urllib.error.HTTPError as e:
                    answer = e
                data = answer.read()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
