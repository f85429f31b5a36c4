"""The README documents every setting and every Redis key the code defines."""

from __future__ import annotations

from pathlib import Path

from cdc_worker.settings import ENV_PREFIX, Settings
from cdc_worker.store import keys

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [
        f"{ENV_PREFIX}{name.upper()}"
        for name in Settings.model_fields
        if f"| `{ENV_PREFIX}{name.upper()}` |" not in README
    ]
    assert missing == []


def test_every_redis_key_is_documented() -> None:
    documented = [
        keys.DOCUMENTS,
        keys.CHECKPOINT,
        keys.HEARTBEAT,
        keys.GENERATIONS,
        keys.RESYNC_QUEUE,
        keys.RESYNC_ACTIVE,
        keys.resync_job("<id>"),
        keys.DEAD_LETTERS,
        keys.states(0).replace("g0", "g<N>"),
        keys.refs(0, "<kind>").replace("g0", "g<N>"),
        keys.link(0, "<kind>", "<id>").replace("g0", "g<N>"),  # type: ignore[arg-type]
        keys.staging_documents(0).replace("g0", "g<N>"),
        keys.index(0, "<field>", "<value>").replace("g0", "g<N>"),  # type: ignore[arg-type]
        keys.lookup(0, "<kind>").replace("g0", "g<N>"),
        keys.retired_documents(0).replace("g0", "g<N>"),
    ]
    assert [key for key in documented if f"| `{key}` |" not in README] == []


def test_the_first_screen_has_the_two_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:12])
    assert "make demo" in first_screen
    assert "make test" in first_screen
