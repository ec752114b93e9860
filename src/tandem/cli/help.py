"""How `tandem ... --help` names values: click's conventions, not Typer's Python type names.

Typer 0.2x prints ``--json <bool>``, ``--epochs <int range>`` and ``Usage: tandem export {run_dir}``.
Here flags show no value, other options show click's placeholders (``INTEGER``, ``FLOAT``, ``TEXT``,
``PATH``, or the choices) and arguments their name in capitals (``RUN_DIR``, ``[K]...``).
``TandemGroup`` (the root app's class) applies this to every command and sub-group once, when Typer
builds the click tree.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_PLACEHOLDERS = {"int": "INTEGER", "int range": "INTEGER", "float": "FLOAT", "float range": "FLOAT",
                 "str": "TEXT", "path": "PATH", "file": "FILE", "directory": "DIRECTORY"}


def placeholder(param: TyperArgument | TyperOption, ctx: Any) -> str:
    label = param.display_type(ctx).strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    return _PLACEHOLDERS.get(label, label)


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return placeholder(self, ctx)


class _Argument(TyperArgument):
    @property
    def display_name_raw(self) -> str:
        return self.metavar or (self.name or "").upper()

    def display_type_rich(self, ctx: Any) -> str | None:
        return None  # the name says what it is, the help says more

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def _tidy_param(param: Any) -> None:
    if type(param) is TyperOption:
        param.__class__ = _Option
    elif type(param) is TyperArgument:
        param.__class__ = _Argument


def _help_option(command: Any, base: type[TyperCommand] | type[TyperGroup], ctx: Any) -> Any:
    option = base.get_help_option(command, ctx)  # made on first use
    if option is not None:
        _tidy_param(option)
    return option


class _Command(TyperCommand):
    def get_help_option(self, ctx: Any) -> Any:
        return _help_option(self, TyperCommand, ctx)


class TandemGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy(self)

    def get_help_option(self, ctx: Any) -> Any:
        return _help_option(self, TyperGroup, ctx)


def tidy(command: Any) -> None:
    """Give ``command``'s parameters (and its sub-commands', recursively) click-style placeholders."""
    if type(command) is TyperCommand:
        command.__class__ = _Command
    elif type(command) is TyperGroup:
        command.__class__ = TandemGroup
    for param in command.params:
        _tidy_param(param)
    for sub in getattr(command, "commands", {}).values():  # a group (Typer vendors its own click)
        tidy(sub)
