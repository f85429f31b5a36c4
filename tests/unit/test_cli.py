"""The command line explains itself: a version, a description and a help text per option."""

from __future__ import annotations

import argparse

import pytest

from cdc_worker.cli import _parser, main, package_version


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def options_without_help(parser: argparse.ArgumentParser) -> list[str]:
    return [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]


def test_every_option_of_every_subcommand_has_a_help_text() -> None:
    parser = _parser()
    commands = subcommands(parser)
    assert {"run", "api", "check", "resync", "migrate", "seed", "loadgen", "demo"} <= set(commands)
    missing = {
        name: options_without_help(sub)
        for name, sub in {"cdc-worker": parser, **commands}.items()
        if options_without_help(sub)
    }
    assert missing == {}


def test_the_walk_would_catch_an_option_without_help() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet", action="store_true")
    assert options_without_help(parser) == ["--quiet"]


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"cdc-worker {package_version()}"
    assert package_version()[0].isdigit()


def test_the_top_level_help_describes_the_tool_for_a_user() -> None:
    text = _parser().format_help()
    assert "read model of helpdesk tickets" in text
    assert "binlog" in text
    assert "exit codes" in text
    assert "passes them down" not in text
