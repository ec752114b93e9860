"""`tandem push|models|versions|alias|rollback`: the model registry under TANDEM_HOME (or TANDEM_DATABASE_URL)."""

from __future__ import annotations

import dataclasses
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tandem.cli.output import console, get_settings, print_json, table
from tandem.errors import ConfigError

if TYPE_CHECKING:
    from tandem.registry.registry import Registry

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def open_registry() -> Registry:
    try:
        from tandem.registry.registry import Registry
    except ModuleNotFoundError as e:
        raise ConfigError(f"the registry needs the serve extras ({e.name} is not installed): "
                          "pip install 'tandem[serve]'") from e
    return Registry.open(get_settings().registry)


def record_json(obj: Any) -> Any:
    """A registry record (or list of them) as JSON-ready data: ISO 8601 times, plain strings for paths."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: record_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [record_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): record_json(v) for k, v in obj.items()}
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def when(dt: datetime | None) -> str:
    return "" if dt is None else f"{dt.astimezone():%Y-%m-%d %H:%M}"


def push(bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `tandem export`, or a .tandem "
                                                "archive of one.")],
         force: Annotated[bool, typer.Option(help="Store it as a new version even if a stored version is identical.")] = False,
         json_out: JsonOpt = False) -> None:
    """Verify a bundle and store it as the next version of its model (unless an identical version is stored)."""
    from tandem.cli.info import _fmt_bytes

    with open_registry() as reg, tempfile.TemporaryDirectory(prefix="tandem-push-") as tmp:
        if bundle.is_file():
            from tandem.bundle import archive

            bundle = archive.unpack(bundle, Path(tmp) / "bundle").root
        same = None if force else reg.identical_version(bundle)
        v = same or reg.push(bundle)
    if json_out:
        print_json({**record_json(v), "identical_to_stored": same is not None})
        return
    if same is not None:
        console.print(f"[bold]{v.name}[/] version [bold]{v.version}[/] already holds this bundle (the same files and "
                      "manifest): nothing stored. Use --force to store it again as a new version")
        return
    console.print(f"pushed [bold]{v.name}[/] version [bold]{v.version}[/] ({_fmt_bytes(v.size)}, "
                  f"manifest {v.manifest_sha256[:12]}…)")
    console.print(f"serve it by alias: tandem alias {v.name} production {v.version}", highlight=False)


def pack(bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `tandem export`.")],
         out: Annotated[Path | None, typer.Option(help="The archive to write; default: BUNDLE.tandem.")] = None,
         json_out: JsonOpt = False) -> None:
    """Write a verified bundle as one .tandem file (a zip) to copy or push elsewhere."""
    import hashlib

    from tandem.bundle import Bundle, archive

    target = archive.pack(bundle, out or bundle.with_name(bundle.name + archive.SUFFIX))
    if json_out:
        manifest = Bundle.load(bundle).manifest
        with target.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        print_json({"archive": str(target), "size": target.stat().st_size, "sha256": digest,
                    "name": manifest.name, "version": manifest.version})
        return
    console.print(f"wrote {target}; push it with `tandem push {target}`", highlight=False, markup=False)


def models(json_out: JsonOpt = False) -> None:
    """List the models in the registry."""
    with open_registry() as reg:
        found = reg.models()
    if json_out:
        print_json(record_json(found))
        return
    if not found:
        console.print("no models yet; add one with `tandem push BUNDLE`")
        return
    t = table("model", "versions", "latest", "aliases")
    for m in found:
        t.add_row(m.name, str(m.versions), str(m.latest or ""), ", ".join(f"{a} → {v}" for a, v in m.aliases.items()))
    console.print(t)


def versions(name: Annotated[str, typer.Argument(help="Model name (the bundle manifest's name).")],
             json_out: JsonOpt = False) -> None:
    """List a model's versions, with their sizes and aliases."""
    from tandem.cli.info import _fmt_bytes

    with open_registry() as reg:
        found = reg.versions(name)
        lineage = [reg.lineage(v) for v in found] if json_out else []
    if json_out:
        print_json([{**record_json(v), "lineage": line} for v, line in zip(found, lineage, strict=True)])
        return
    t = table("version", "created", "size", "manifest sha256", "aliases", title=name)
    for v in found:
        t.add_row(str(v.version), when(v.created), _fmt_bytes(v.size), v.manifest_sha256[:16] + "…", ", ".join(v.aliases))
    console.print(t)


def alias(name: Annotated[str, typer.Argument(help="Model name.")],
          alias: Annotated[str, typer.Argument(help="Alias such as production or beta.")],
          version: Annotated[int, typer.Argument(min=1, help="Version number to point the alias at.")],
          json_out: JsonOpt = False) -> None:
    """Point an alias at a version (servers follow it without restarting)."""
    with open_registry() as reg:
        a = reg.set_alias(name, alias, version)
    if json_out:
        print_json(record_json(a))
        return
    was = f" (was {a.previous})" if a.previous is not None else ""
    console.print(f"{a.name}:{a.alias} → version {a.version}{was}", highlight=False)


def rollback(name: Annotated[str, typer.Argument(help="Model name.")],
             alias: Annotated[str, typer.Argument(help="Alias to move back.")],
             json_out: JsonOpt = False) -> None:
    """Point an alias back at the version it pointed at before its last move."""
    with open_registry() as reg:
        was = next((x.version for x in reg.aliases(name) if x.alias == alias), None)
        a = reg.rollback(name, alias)
    if json_out:
        print_json(record_json(a))
        return
    console.print(f"{a.name}:{a.alias} rolled back from version {was} to version {a.version}"
                  + (f" (one more rollback: version {a.previous})" if a.previous is not None else
                     " (where it was first set: nothing earlier to roll back to)"), highlight=False)


def register(app: typer.Typer) -> None:
    for command in (push, pack, models, versions, alias, rollback):
        app.command()(command)
