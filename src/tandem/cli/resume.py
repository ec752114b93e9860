"""What `tandem train` and `tandem demo` say when Ctrl-C stops them: how far the run folder got and
the command that continues it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import typer

from tandem.cli.output import err_console
from tandem.training.run import HISTORY

LAST = "checkpoint.pt"  # tandem.training.checkpoint.LAST, without importing torch for it

INTERRUPTED = 130  # the shell's status for a command stopped by SIGINT


def given_options(ctx: typer.Context) -> list[str]:
    """The options of this command line as the user gave them (defaults left out), ready to run again."""
    words: list[str] = []
    for param in ctx.command.params:
        source = ctx.get_parameter_source(param.name)
        if source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT") or not param.opts:
            continue
        value = ctx.params.get(param.name)
        if getattr(param, "is_flag", False):
            flag = param.opts[0] if value else (param.secondary_opts[0] if param.secondary_opts else None)
            if flag:
                words.append(flag)
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            words += [param.opts[0], str(getattr(v, "value", v))]
    return words


def command_names(ctx: typer.Context) -> list[str]:
    """["train"] for `tandem train` however it was started (`python -m tandem` included)."""
    names = []
    node: Any = ctx  # typer's Context, its parents click's
    while node.parent is not None:
        names.append(node.info_name or "")
        node = node.parent
    return names[::-1]


def finished_epochs(run_dir: Path) -> int:
    """Epochs the run folder holds (its history, written with every checkpoint)."""
    try:
        return len(json.loads((run_dir / HISTORY).read_text()))
    except (OSError, ValueError):
        return 0


def stopped_training(ctx: typer.Context, run_dir: Path, epochs: int) -> typer.Exit:
    """Say what a Ctrl-C left in ``run_dir`` and how to continue; the Exit to raise."""
    done = finished_epochs(run_dir) if (run_dir / LAST).is_file() else 0
    if done:
        again = ["tandem", *command_names(ctx), *given_options(ctx)]
        if "--resume" not in again:
            again.append("--resume")
        err_console.print(f"\nstopped: {run_dir} keeps epoch {done} of {epochs} (checkpoint.pt). Continue with:\n"
                          f"  {shlex.join(again)}", markup=False, highlight=False)
    else:
        err_console.print(f"\nstopped before the first epoch finished: {run_dir} holds nothing to resume; run the "
                          "same command again", markup=False, highlight=False)
    return typer.Exit(INTERRUPTED)


def stopped_demo(run_dir: Path, **_: Any) -> typer.Exit:
    done = finished_epochs(run_dir) if (run_dir / LAST).is_file() else 0
    where = f"{run_dir} keeps epoch {done}; " if done else ""
    err_console.print(f"\nstopped: {where}run `tandem demo` with the same options again to continue where it "
                      "stopped", markup=False, highlight=False)
    return typer.Exit(INTERRUPTED)
