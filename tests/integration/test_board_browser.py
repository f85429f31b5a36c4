"""The live board in a real browser: Debian's chromium driven by Playwright, against the real
worker, MariaDB, Redis and the API served by uvicorn. The DOM is awaited, never slept on.

``BOARD_SCREENSHOT=docs/board.png pytest -k board`` also saves the screenshot the docs show.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import text

from cdc_worker.devtools.seed import seed
from cdc_worker.settings import load_settings
from tests.conftest import SourceDatabase
from tests.harness import wait_synced, worker_thread
from tests.live import served_api

CHROMIUM = "/usr/bin/chromium"
# As root, with no network: no sandbox, and none of the browser's own background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOM_TIMEOUT_MS = 20_000


@pytest.fixture
def board(source_db: SourceDatabase, redis_url: str) -> Iterator[tuple[Page, SourceDatabase]]:
    assert Path(CHROMIUM).exists(), (
        "install Debian's chromium (scripts/ensure-servers --for-tests does)"
    )
    seed(source_db.engine, 60, seed=5)
    with worker_thread(source_db.cdc_url, redis_url):
        wait_synced(source_db.engine, redis_url)
        with (
            served_api(load_settings(redis_url=redis_url)) as base,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.set_default_timeout(DOM_TIMEOUT_MS)
            expect.set_options(timeout=DOM_TIMEOUT_MS)
            page.goto(f"{base}/board?department_id=1")
            expect(page.locator("body")).to_have_attribute("data-ready", "true")
            try:
                yield page, source_db
            finally:
                browser.close()


def sql(source: SourceDatabase, statement: str, **params: object) -> None:
    with source.engine.begin() as conn:
        conn.execute(text(statement), params)


def board_ids(page: Page) -> list[int]:
    ids: list[int] = page.eval_on_selector_all(
        "#tickets tr", "rows => rows.map(r => Number(r.id.slice(7)))"
    )
    return ids


def test_the_board_follows_titles_moves_and_renames_live(
    board: tuple[Page, SourceDatabase],
) -> None:
    page, source = board
    with source.engine.connect() as conn:
        expected = conn.execute(
            text("SELECT id FROM tickets WHERE department_id=1 AND is_deleted=0 ORDER BY id")
        ).scalars()
        listed = [int(i) for i in expected]
    assert board_ids(page) == listed
    changed, moved = listed[0], listed[1]

    sql(source, "UPDATE tickets SET title='Printer on fire, again' WHERE id=:i", i=changed)
    expect(page.locator(f"#ticket-{changed} .title")).to_have_text("Printer on fire, again")
    sql(source, "UPDATE tickets SET department_id=2 WHERE id=:i", i=moved)
    expect(page.locator(f"#ticket-{moved}")).to_have_count(0)
    sql(source, "UPDATE departments SET name='Front desk' WHERE id=1")
    expect(page.locator("#heading")).to_have_text("Front desk")

    assert board_ids(page) == [i for i in listed if i != moved]
    assert page.text_content("#state") == "live"
    save_screenshot(page, Path(os.environ.get("BOARD_SCREENSHOT", "")) or None)


def save_screenshot(page: Page, path: Path | None) -> None:
    """The board as a PNG: in the test's output always, in the docs when asked."""
    png = page.screenshot(full_page=True, animations="disabled")
    assert png.startswith(b"\x89PNG")
    if path is not None and str(path) not in ("", "."):
        path.write_bytes(png)
