"""Start-up refusals and the pure pieces of the API's guards (issue 20, items 3 and 12)."""

from __future__ import annotations

import pytest

from cdc_worker.api.admin import token_problem
from cdc_worker.cli import main
from cdc_worker.errors import ConfigurationError
from cdc_worker.settings import load_settings
from projections.collation import fold


@pytest.mark.parametrize("token", ["a", "short-token-15c", " " * 20, "\t  x  \n"])
def test_a_short_or_blank_admin_token_is_refused(token: str) -> None:
    with pytest.raises(ConfigurationError, match=r"CDC_ADMIN_TOKEN: .*16 characters"):
        load_settings(admin_token=token)


def test_an_admin_token_is_kept_stripped_and_an_empty_one_turns_admin_off() -> None:
    settings = load_settings(admin_token="  sixteen-chars-ok  ")
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "sixteen-chars-ok"
    assert load_settings(admin_token="").admin_token is None


def test_the_api_refuses_to_start_with_a_short_token_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CDC_ADMIN_TOKEN", "   a   ")
    assert main(["api"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "CDC_ADMIN_TOKEN" in err
    assert "   a   " not in err


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    assert token_problem(f"{scheme} sixteen-chars-ok", "sixteen-chars-ok") is None


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("", 401), ("Basic abc", 401), ("Bearer ", 401), ("Bearer nope", 403)],
)
def test_a_missing_or_wrong_token_is_refused(header: str | None, status: int) -> None:
    problem = token_problem(header, "sixteen-chars-ok")
    assert problem is not None
    assert problem[0] == status


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("MATEO.PETROVIC.1@EXAMPLE.COM", "mateo.petrovic.1@example.com"),
        ("API", "api"),
        ("Straße", "STRASSE"),
        ("Ünïcode", "unicode"),
        ("tag  ", "TAG"),
        ("😀", "😁"),
    ],
)
def test_fold_equates_what_the_collation_equates(a: str, b: str) -> None:
    assert fold(a) == fold(b)


@pytest.mark.parametrize(("a", "b"), [("api", "a-pi"), (" api", "api"), ("😀", "\ufffd")])
def test_fold_keeps_apart_what_the_collation_keeps_apart(a: str, b: str) -> None:
    assert fold(a) != fold(b)
