"""The operator's page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.web_harness import TOKEN, running_page

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.timeout(240)


def _need_chromium() -> None:
    """Skip without a Chromium, except in CI, where the page must have been tried."""
    if os.access(CHROMIUM, os.X_OK):
        return
    reason = "no chromium found (apt-get install chromium; .ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(f"Chromium is required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


async def test_the_playground_in_a_browser(tmp_path: Path) -> None:
    """Log in, send the sample photo and a line, watch the queue row, play the video."""
    _need_chromium()
    from playwright.async_api import async_playwright

    async with (
        running_page(tmp_path, worker=True, preview={"fps": 8}) as page,
        async_playwright() as playwright,
    ):
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            tab = await browser.new_page(viewport={"width": 1280, "height": 1000})
            # A wrong token sees nothing: the login again, no queue, no CSRF token.
            await tab.goto(f"{page.url}/")
            assert tab.url.endswith("/login")
            await tab.fill("input[name=token]", "not-the-token-at-all")
            await tab.click("button[type=submit]")
            await tab.wait_for_selector("#login-error")
            assert await tab.locator("#queue").count() == 0
            assert await tab.locator('meta[name="csrf"]').count() == 0

            await tab.fill("input[name=token]", TOKEN)
            await tab.click("button[type=submit]")
            await tab.wait_for_selector("#queue")
            await tab.wait_for_function("document.getElementById('live').textContent === 'live'")

            await tab.set_input_files("input[name=photo]", ROOT / "samples" / "portrait.jpg")
            await tab.fill("input[name=line]", 'She smiles and says: "Hello there."')
            await tab.click("#try button[type=submit]")
            row = tab.locator("#queue tbody tr.mine")
            await row.first.wait_for(timeout=20_000)
            state = await row.first.locator("td").nth(1).text_content()
            assert state in ("queued", "submitting", "running", "downloading", "delivering")

            playing = """() => {
                const v = document.getElementById('player');
                return !v.hidden && v.readyState >= 2 && v.duration > 0
                    && (v.currentTime > 0 || v.ended);
            }"""
            await tab.wait_for_function(playing, timeout=180_000, polling=200)
            first = await tab.evaluate("document.getElementById('player').currentTime")
            await tab.wait_for_function(
                f"() => {{ const v = document.getElementById('player');"
                f" return v.currentTime > {first} || v.ended; }}",
                timeout=20_000,
            )
            duration = await tab.evaluate("document.getElementById('player').duration")
            assert 4 <= duration <= 11
            assert "done" in (await tab.text_content("#try-status") or "")

            shots = [tmp_path / "web-page.png", tmp_path / "web-page-usage.png"]
            await tab.screenshot(path=str(shots[0]), full_page=True)
            # The charts are drawn with the page: after a reload they count the take.
            await tab.reload()
            await tab.wait_for_selector("text=Takes per day by outcome — 1 take")
            await tab.screenshot(path=str(shots[1]), full_page=True)
            for shot in shots:
                print(f"screenshot of the operator's page: {shot}")
                log.info("screenshot of the operator's page: %s", shot)
                assert shot.stat().st_size > 10_000
        finally:
            await browser.close()
