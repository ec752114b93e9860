"""`tandem ... --help` as a new user reads it: every option described in one line, no Python type names
in angle brackets or braces, square brackets shown as typed (Rich would take `tandem[ray]` for markup)."""

from __future__ import annotations

import re

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from tandem.cli.main import app

ROOT = typer.main.get_command(app)


def commands(command=ROOT, path=("tandem",)):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


ALL = list(commands())
IDS = [" ".join(p) for p, _ in ALL]


def help_of(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path[1:], "--help"], terminal_width=240, env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("path", "command"), ALL, ids=IDS)
def test_every_option_and_argument_has_a_one_line_description(path, command):
    missing = [p.name for p in command.params if not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"{' '.join(path)}: no help for {missing}"
    long = [p.name for p in command.params if "\n" in p.help]
    assert not long, f"{' '.join(path)}: help of {long} spans lines"
    assert (command.help or "").strip(), f"{' '.join(path)} has no description"


@pytest.mark.parametrize(("path", "command"), ALL, ids=IDS)
def test_no_help_text_is_eaten_as_markup(path, command):
    texts = [command.help or ""] + [p.help or "" for p in command.params]
    for text in texts:
        # What Rich prints must be what was written (an escaped \[ prints as [).
        assert Text.from_markup(text).plain == text.replace("\\[", "["), f"{' '.join(path)}: {text!r}"


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=IDS)
def test_help_shows_no_type_names_in_brackets(path):
    shown = help_of(path)
    assert not re.search(r"<(bool|int|float|str|path|list)", shown, re.I), shown
    assert not re.search(r"\{[a-z_]+\}", shown), shown


def test_extras_are_named_in_full():
    assert "tandem[ray]" in help_of(("tandem", "serve"))
    shown = help_of(("tandem", "train"))
    assert "tandem[ray]" in shown and "tandem[teacher]" in shown
    usage = help_of(("tandem", "export")).splitlines()
    assert any("Usage: tandem export [OPTIONS] RUN_DIR" in line for line in usage)
    assert "BUNDLE [K]..." in help_of(("tandem", "split"))


def test_the_readme_lists_every_command():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## CLI", 1)[1].split("```", 2)[1]
    missing = [name for name, command in ROOT.commands.items()
               if not command.hidden and not re.search(rf"(tandem |\| |/ ){re.escape(name)}\b", block)]
    assert not missing, f"README's CLI section lacks {missing}"


def test_an_error_message_keeps_its_square_brackets():
    from tests.integration.cli import tandem

    shown = tandem("info", "/nonexistent/no[ray]where", ok=False).stderr
    assert "no[ray]where" in shown


def test_a_models_name_defaults_to_its_run_folders_name():
    from pathlib import Path

    from tandem.cli.main import name_from_folder

    assert name_from_folder(Path("runs/faces")) == "faces"
    assert name_from_folder(Path("runs/my faces (v2)/")) == "my-faces-v2"
    assert name_from_folder(Path("runs/run_2")) == "run_2"
    assert name_from_folder(Path("runs/___")) == "model"  # a name starts with a letter or digit
    assert name_from_folder(Path("runs/..x")) == "x"
    assert name_from_folder(Path("runs") / ("x" * 80)) == "x" * 64
