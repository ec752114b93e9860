"""The `tandem` command line: thin Typer commands over the library. Heavy imports (torch) happen
inside the commands that need them, so `--help`, `predict` and `celebmatch match` stay light."""
