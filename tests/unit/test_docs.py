"""The docs can't drift from the code: settings, Redis keys, links, and the README's size."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from cdc_worker.settings import ENV_PREFIX, Settings
from cdc_worker.store import keys

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
README_MAX_CHARS = 10_000

# What each parameter of a key function stands for on the keys page.
PLACEHOLDERS = {
    "generation": "<N>",
    "kind": "<kind>",
    "ref_id": "<id>",
    "field": "<field>",
    "value": "<value>",
    "job_id": "<id>",
}
# Module constants that are prefixes of keys rather than keys.
PREFIXES = {"PREFIX", "generation_prefix"}
MARKDOWN_LINK = re.compile(r"\]\(([^)\s#]+\.md)(?:#[^)]*)?\)")
ANCHORED_LINK = re.compile(r"\]\(([^)\s#]*\.md)?#([^)\s]+)\)")


def _page(name: str) -> str:
    return (DOCS / name).read_text()


def _table_cells(page: str) -> set[str]:
    """The first cell of every table row: `| `x` | ...` gives x."""
    return set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.MULTILINE))


def documented_keys() -> dict[str, str]:
    """Every key and key prefix of the keys module, as the keys page spells it."""
    spelled: dict[str, str] = {}
    for name, value in vars(keys).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if isinstance(value, str) and name.isupper():
            spelled[name] = value
        elif inspect.isfunction(value) and value.__module__ == keys.__name__:
            params = inspect.signature(value).parameters
            unknown = set(params) - set(PLACEHOLDERS)
            assert not unknown, f"keys.{name}: name a placeholder for {unknown} in PLACEHOLDERS"
            spelled[name] = value(*(PLACEHOLDERS[p] for p in params))
    return spelled


def test_every_setting_is_in_the_configuration_table() -> None:
    rows = _table_cells(_page("configuration.md"))
    missing = [
        f"{ENV_PREFIX}{name.upper()}"
        for name in Settings.model_fields
        if f"{ENV_PREFIX}{name.upper()}" not in rows
    ]
    assert missing == []


def test_every_redis_key_and_prefix_is_on_the_keys_page() -> None:
    spelled = documented_keys()
    assert spelled["states"] == "ticket-sync:g<N>:states"  # the placeholders did their job
    rows = _table_cells(_page("redis-keys.md"))
    assert sorted(name for name, key in spelled.items() if key not in rows) == []


def test_the_key_extraction_sees_every_kind_of_key() -> None:
    spelled = documented_keys()
    assert {"DOCUMENTS", "CHECKPOINT", "resync_job", "builder", "staged_writes"} <= set(spelled)
    assert set(spelled) >= PREFIXES


@pytest.mark.parametrize(
    "page",
    [
        "README.md",
        "docs/README.md",
        *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md") if p.name != "README.md"),
    ],
)
def test_every_markdown_link_points_to_an_existing_file(page: str) -> None:
    path = ROOT / page
    targets = MARKDOWN_LINK.findall(path.read_text())
    assert [t for t in targets if not (path.parent / t).is_file()] == []


def _anchors(page: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))]
)
def test_every_link_to_a_section_names_an_existing_heading(page: str) -> None:
    path = ROOT / page
    broken = [
        f"{target}#{anchor}"
        for target, anchor in ANCHORED_LINK.findall(path.read_text())
        if anchor not in _anchors((path.parent / target if target else path).read_text())
    ]
    assert broken == []


def test_the_readme_links_every_docs_page_and_the_index_too() -> None:
    pages = {p.name for p in DOCS.glob("*.md")}
    readme_links = {Path(t).name for t in MARKDOWN_LINK.findall(README) if t.startswith("docs/")}
    index_links = set(MARKDOWN_LINK.findall(_page("README.md")))
    assert pages - readme_links == set()
    assert pages - {"README.md"} - index_links == set()


def test_the_readme_is_a_front_page() -> None:
    assert len(README) <= README_MAX_CHARS


def test_the_first_screen_has_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:12])
    assert "make demo" in first_screen
    assert "make test" in first_screen
