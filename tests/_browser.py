"""Headless Chromium for the page tests (Debian's chromium driven by Playwright): skipped when
either is absent, a failure instead with INTERPLM_REQUIRE_BROWSER=1."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("INTERPLM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STOPS = np.array([[255, 255, 255], [253, 174, 97], [215, 48, 39], [127, 0, 38]], np.float64)


def heat(t: float) -> np.ndarray:
    """The documented colour scale (docs/report.md): linear between four stops over [0, 1]."""
    t = float(np.clip(t, 0, 1)) * 3
    i = min(int(t), 2)
    return np.rint(STOPS[i] + (t - i) * (STOPS[i + 1] - STOPS[i]))


def rgb(hex_int: int) -> np.ndarray:
    return np.array([(hex_int >> 16) & 255, (hex_int >> 8) & 255, hex_int & 255], np.float64)


def browser_or_skip() -> str:
    """The chromium executable; skips the test (or fails it, INTERPLM_REQUIRE_BROWSER=1) if absent."""
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "playwright (pip install playwright) is not installed"
    if why is None and not Path(CHROMIUM).is_file():
        why = f"no chromium at {CHROMIUM} (apt install chromium; or set INTERPLM_CHROMIUM)"
    if why:
        if os.environ.get("INTERPLM_REQUIRE_BROWSER") == "1":
            pytest.fail(f"INTERPLM_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return CHROMIUM


@contextlib.contextmanager
def browser_context(profile: Path):
    """A headless Chromium context (1,400 x 1,000); one per test session (the ``browser``
    fixture of conftest.py: Playwright's sync API runs one at a time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=browser_or_skip(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield ctx
        finally:
            ctx.close()


def open_page(ctx, url: str):
    """A new page of ``ctx`` at ``url``, once it says it is ready; ``page.problems`` collects
    console errors and warnings, page errors and requests that are not file:// or data:."""
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
          if m.type in ("error", "warning") and "GL Driver Message" not in m.text else None)
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("request", lambda r: problems.append(f"request {r.url}")
          if not r.url.startswith(("file:", "data:")) else None)
    pg.goto(url)
    pg.wait_for_selector("body[data-ready='1']")
    pg.problems = problems
    return pg
