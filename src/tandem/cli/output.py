"""Printing for the CLI: rich text for people, JSON for machines, errors to stderr."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.logging import RichHandler

if TYPE_CHECKING:
    from tandem.settings import Settings
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_time=False, show_path=False)],
        force=True,
    )
    for noisy in ("torch", "onnxruntime", "matplotlib", "PIL", "alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The ONNX exporter narrates every graph rewrite at INFO (onnxscript, onnx_ir: 65-100 lines an export) and
    # sends Python warnings to the debug log (export/onnx_export.py): -v shows both (not its own debug lines: thousands).
    for exporter, quiet in (("onnxscript", logging.WARNING), ("onnx_ir", logging.WARNING), ("torch.onnx", logging.ERROR)):
        logging.getLogger(exporter).setLevel(logging.INFO if verbose else quiet)


def print_json(obj: Any) -> None:
    # Plain print: rich would wrap long lines and break the JSON for a machine reader.
    print(json.dumps(obj, indent=2, default=str))


def table(*columns: str, title: str | None = None) -> Table:
    """The CLI's table style: these columns, no outer border."""
    t = Table(title=title, show_edge=False)
    for col in columns:
        t.add_column(col)
    return t


def get_settings() -> Settings:
    """The environment's settings, read when a command needs them: pydantic and the settings model
    cost about 130 ms to import, which `tandem --help` and the commands that need none never pay."""
    from tandem.settings import get_settings as read

    return read()
