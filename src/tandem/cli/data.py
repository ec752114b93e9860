"""`tandem data fetch lfw`: the dataset the demo, the tests and the benchmarks use."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tandem.cli.output import console, get_settings, print_json

app = typer.Typer(help="Datasets: fetch LFW into your data home.", no_args_is_help=True)


class Dataset(StrEnum):
    lfw = "lfw"


@app.command()
def fetch(
    dataset: Annotated[Dataset, typer.Argument(help="lfw: Labeled Faces in the Wild (5,749 people, 13,233 photos).")],
    to: Annotated[Path | None, typer.Option(help="The data home to fetch into (default: TANDEM_DATA_HOME).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Download LFW (about 230 MB, checked against its published sha256s) into the data home, unless it is there."""
    from tandem.data.fetch import HOW, fetch_lfw
    from tandem.errors import ConfigError

    home = to or get_settings().data_home
    if home is None:
        raise ConfigError(f"no data home: give --to DIR or set TANDEM_DATA_HOME. {HOW}")
    with console.status(f"fetching LFW into {home}…"):
        got = fetch_lfw(home)
    if json_out:
        print_json({"dataset": dataset.value, "data_home": str(got.data_home), "people": got.people,
                    "photos": got.photos, "downloaded": got.downloaded})
        return
    what = "downloaded and verified" if got.downloaded else "already there"
    console.print(f"LFW {what}: {got.people} people, {got.photos} photos in {got.data_home}/lfw_home "
                  f"(use it with TANDEM_DATA_HOME={got.data_home})", highlight=False)
