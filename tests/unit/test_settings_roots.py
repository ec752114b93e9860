"""Settings are read at the composition roots and passed down (STYLE: settings passed in): the CLI
commands and create_app read the environment; the rest takes what it is given. `tandem serve` hands its
uvicorn workers the Settings object itself, pickled. Each area takes only its own part of them."""

from __future__ import annotations

import ast
import functools
import pickle
from collections.abc import Iterator
from pathlib import Path

import tandem
from tandem.server.connections import ConnectionLimits, protocol
from tandem.settings import OtaSettings, RaySettings, RegistrySettings, ServerSettings, Settings

SRC = Path(tandem.__file__).parent
# The CLI commands, create_app, Ray Serve's application builder (ray_serve.app, for a Serve config), and
# get_settings itself.
ROOTS = {"cli", "server/app.py", "server/ray_serve.py", "settings.py"}


def _nodes_outside(roots: set[str]) -> Iterator[tuple[str, ast.AST]]:
    """(module path, node) for every node of every module but ``roots`` (files or top folders)."""
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel not in roots and rel.split("/")[0] not in roots:
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                yield rel, node


def test_get_settings_is_called_only_at_the_roots():
    callers = [f"{rel}:{node.lineno}" for rel, node in _nodes_outside(ROOTS)
               if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "get_settings"]
    assert callers == []


def test_the_database_url_is_a_secret_shown_without_credentials():
    s = Settings(database_url="postgresql+psycopg://tandem:hunter2@db.example:5432/registry")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert s.registry_url == "postgresql+psycopg://tandem:hunter2@db.example:5432/registry"  # for the engine
    assert s.registry_location == "db.example:5432/registry"
    unset = Settings(home=Path("/srv/tandem"), database_url=None)
    assert unset.registry_url == "sqlite:////srv/tandem/registry.db"


def test_what_serve_gives_its_workers_survives_pickling():
    from tandem.server.app import create_app

    settings = Settings(database_url="postgresql+psycopg://tandem:hunter2@db.example/registry", max_batch_size=4,
                        workers=2)
    factory = pickle.loads(pickle.dumps(functools.partial(create_app, settings)))
    assert factory.func is create_app
    assert factory.args[0].registry_url == settings.registry_url and factory.args[0].max_batch_size == 4
    http = pickle.loads(pickle.dumps(protocol(3.0, 64)))
    assert http.keywords == {"limits": ConnectionLimits(header_timeout_s=3.0, max_connections=64)}  # type: ignore[attr-defined]


AREAS = (ServerSettings, RegistrySettings, OtaSettings, RaySettings)
# Modules that may see the whole Settings: the composition roots, and the server's error pages (which
# hide the paths of three areas: the Tandem home, the browser app, the data).
WHOLE = {"cli", "server/app.py", "server/ray_serve.py", "server/responses.py", "settings.py"}


def test_each_setting_belongs_to_one_area_and_is_read_from_the_environment(monkeypatch):
    fields = [set(area.model_fields) for area in AREAS]
    assert all(not a & b for i, a in enumerate(fields) for b in fields[i + 1 :])
    # Outside the areas: where this machine keeps things the CLI's commands read (LFW, LiteRT's converter).
    assert set().union(*fields) | {"data_home", "litert_python"} == set(Settings.model_fields)
    monkeypatch.setenv("TANDEM_MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("TANDEM_OTA_GATE_MIN_DEVICES", "7")
    monkeypatch.setenv("TANDEM_RAY_MAX_FAILURES", "4")
    s = Settings(home=Path("/srv/tandem"))
    server, registry, ota, ray = s.server, s.registry, s.ota, s.ray
    assert type(server) is ServerSettings and server.max_batch_size == 3 and not hasattr(server, "ota_gate_min_devices")
    assert type(ota) is OtaSettings and ota.ota_gate_min_devices == 7
    assert type(ray) is RaySettings and ray.ray_max_failures == 4
    assert type(registry) is RegistrySettings and registry.registry_url == "sqlite:////srv/tandem/registry.db"
    assert pickle.loads(pickle.dumps(server)) == server


def test_below_the_roots_code_names_its_area_not_the_whole_settings():
    whole = [f"{rel}:{node.lineno}" for rel, node in _nodes_outside(WHOLE)
             if isinstance(node, ast.ImportFrom) and node.module == "tandem.settings"
             and any(a.name == "Settings" for a in node.names)]
    assert whole == []
