"""Headless Chromium (Debian's build, not Playwright's download) for the dashboard browser test.

``launch`` starts the system ``chromium`` with Playwright's sync API; ``Tour`` wraps one
page and keeps what a leak check needs: every response URL and redirect ``Location``, the
HTML of every page seen, and a full-page screenshot of each under
``test-artifacts/screenshots/``. ``step`` turns a missing element into a failure that says
which dashboard step and page did not work, so an unfinished page fails loudly.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Response, sync_playwright
from playwright.sync_api import Error as PlaywrightError

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000


def chromium_path() -> str | None:
    """The system Chromium (``apt-get install chromium``), or None when there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    fallback = Path("/usr/bin/chromium")
    return str(fallback) if fallback.exists() else None


@contextmanager
def launch() -> Iterator[Browser]:
    """A headless system Chromium; the caller skips first when ``chromium_path()`` is None."""
    path = chromium_path()
    assert path is not None, "no chromium binary"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Seen:
    """One response the browser received."""

    url: str
    status: int
    location: str | None
    headers: dict[str, str]


@dataclass
class Tour:
    """One browser page on a keyfob server, remembering everything it saw."""

    page: Page
    base_url: str
    prefix: str = "page"  # keeps one test's screenshots apart from another's
    responses: list[Seen] = field(default_factory=list)
    pages: dict[str, str] = field(default_factory=dict)  # screenshot name -> HTML
    screenshots: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("response", self._record)

    def _record(self, response: Response) -> None:
        headers = response.headers  # lower-cased names
        self.responses.append(
            Seen(response.url, response.status, headers.get("location"), dict(headers))
        )

    def goto(self, path: str) -> Response | None:
        return self.page.goto(self.base_url + path, wait_until="load")

    def path(self) -> str:
        """The current page's path and query (without the server address)."""
        return self.page.url.removeprefix(self.base_url)

    def snap(self, name: str) -> str:
        """Save a full-page screenshot as ``PREFIX-NN-name.png`` and keep the page's HTML."""
        self.page.wait_for_load_state("load")
        html = self.page.content()
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        target = SCREENSHOTS / f"{self.prefix}-{len(self.screenshots) + 1:02d}-{slug}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(target), full_page=True)
        self.screenshots.append(target)
        self.pages[target.stem] = html
        return html

    def response_for(self, path: str) -> Seen:
        """The latest response the browser got for ``path``."""
        for seen in reversed(self.responses):
            if seen.url.removeprefix(self.base_url).split("?")[0] == path:
                return seen
        raise AssertionError(f"the browser never loaded {path}")


@contextmanager
def step(tour: Tour, what: str, hint: str = "") -> Iterator[None]:
    """Run one dashboard step; a missing element or failed check fails with where it broke."""
    try:
        yield
    except (PlaywrightError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        page = tour.path()
        try:
            tour.snap(f"failed {what}")
        except PlaywrightError:
            pass
        more = f" ({hint})" if hint else ""
        pytest.fail(f"dashboard step '{what}' failed on {page}{more}: {first}", pytrace=False)
