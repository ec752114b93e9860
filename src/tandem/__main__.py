"""The `tandem` command. Its libraries (typer, rich, pydantic-settings, OpenCV) are the ``cli``
extra: a device install (`pip install tandem`, the SDK alone) has the package but not the command's
needs, and says so instead of a traceback."""

from __future__ import annotations

import sys

CLI_NEEDS = {"typer", "rich", "pydantic_settings", "cv2"}


def run() -> None:
    try:
        from tandem.cli.main import main
    except ModuleNotFoundError as e:
        if e.name not in CLI_NEEDS:
            raise
        print(f"error: the tandem command needs {e.name}, which this install lacks (`pip install tandem` is the "
              "device SDK alone): pip install 'tandem[cli]'", file=sys.stderr)
        raise SystemExit(2) from None
    main()


if __name__ == "__main__":
    run()
