"""The apps a server (``create_app(apps=[...])``) or the CLI knows, by name; ``builtin()``: Tandem's own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tandem.apps.base import App
from tandem.bundle import Manifest
from tandem.errors import ConfigError, NotFound, quoted


def builtin() -> list[App]:
    """The apps Tandem ships (a new one is added here, see docs/architecture.md)."""
    from tandem.apps.celebmatch.app import CelebMatch
    from tandem.apps.classify import Classify
    from tandem.apps.deepart import DeepArt

    return [CelebMatch(), Classify(), DeepArt()]


class Apps:
    def __init__(self, apps: Iterable[App]) -> None:
        self._by_name: dict[str, App] = {}
        for app in apps:
            if app.name in self._by_name:
                raise ConfigError(f"two apps are named {app.name!r} ({type(self._by_name[app.name]).__name__} and "
                                  f"{type(app).__name__}); give each app its own name")
            self._by_name[app.name] = app

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Iterator[App]:
        return (self._by_name[n] for n in self.names)

    def get(self, name: str) -> App:
        app = self._by_name.get(name)
        if app is None:
            raise NotFound(f"unknown app {quoted(name)}; apps: {', '.join(self.names) or 'none'}")
        return app

    def serving(self, manifest: Manifest) -> list[App]:
        """The apps a bundle with this manifest can serve."""
        return [app for app in self if app.unsupported(manifest) is None]
