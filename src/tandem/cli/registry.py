"""`tandem push|models|versions|alias|rollback|gc`: the model registry under TANDEM_HOME (or TANDEM_DATABASE_URL).

`tandem versions` is a group that still takes a model name first: `tandem versions NAME` lists its
versions as it always did, `tandem versions archive|unarchive|delete NAME VERSION` change one.
"""

from __future__ import annotations

import dataclasses
import getpass
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from tandem.cli.help import TandemGroup
from tandem.cli.output import console, err_console, get_settings, print_json, table
from tandem.errors import ConfigError, InvalidRequest

if TYPE_CHECKING:
    from tandem.registry.registry import Registry

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NameArg = Annotated[str, typer.Argument(help="Model name (the bundle manifest's name).")]
VersionArg = Annotated[int, typer.Argument(min=1, help="Version number.")]


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


def os_user() -> str | None:
    """Who runs this command, as the operating system says (None where it cannot tell, a container say,
    or where the name is not one a push would take: the default never stops a push)."""
    try:
        name = getpass.getuser().strip()
    except (OSError, KeyError):
        return None
    return name if name and len(name) <= 200 and name.isprintable() else None


def push(bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `tandem export`, or a .tandem "
                                                "archive of one.")],
         force: Annotated[bool, typer.Option(help="Store it as a new version even if a stored version is identical.")] = False,
         by: Annotated[str | None, typer.Option("--by", help="Who is pushing, kept in the version's lineage (default: "
                                                 "your user name on this machine), e.g. an e-mail or a CI job.")] = None,
         json_out: JsonOpt = False) -> None:
    """Verify a bundle and store it as the next version of its model (unless an identical version is stored)."""
    from tandem.cli.info import _fmt_bytes

    with open_registry() as reg, tempfile.TemporaryDirectory(prefix="tandem-push-") as tmp:
        if bundle.is_file():
            from tandem.bundle import archive

            bundle = archive.unpack(bundle, Path(tmp) / "bundle").root
        same = None if force else reg.identical_version(bundle)
        v = same or reg.push(bundle, pushed_by=by if by is not None else os_user())
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


class VersionsGroup(TandemGroup):
    """`tandem versions NAME`: anything that is not one of the group's commands is a model name (or an
    option before one) and goes to ``list``, so the listing reads as it did before the group existed. A
    model named like a command is listed with `tandem versions list NAME`."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            return "list", self.commands["list"], args
        return super().resolve_command(ctx, args)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return ["NAME [--json] | COMMAND [ARGS]..."]


versions_app = typer.Typer(
    cls=VersionsGroup, no_args_is_help=True, context_settings={"ignore_unknown_options": True},
    help="List a model's versions (`tandem versions NAME`), or archive, unarchive or delete one.")


@versions_app.command("list")
def versions(name: NameArg, json_out: JsonOpt = False) -> None:
    """List a model's versions, with their sizes, aliases, who pushed them and which are archived."""
    from tandem.cli.info import _fmt_bytes

    with open_registry() as reg:
        found = reg.versions(name)
        lineage = [reg.lineage(v) for v in found] if json_out else []
    if json_out:
        print_json([{**record_json(v), "lineage": line} for v, line in zip(found, lineage, strict=True)])
        return
    t = table("version", "created", "size", "manifest sha256", "aliases", "pushed by", "status", title=name)
    for v in found:
        # Who pushed is what they said (`tandem push --by`): data, never markup.
        t.add_row(str(v.version), when(v.created), _fmt_bytes(v.size), v.manifest_sha256[:16] + "…", ", ".join(v.aliases),
                  Text(v.pushed_by or ""), f"archived {when(v.archived)}" if v.archived else "")
    console.print(t)


@versions_app.command()
def archive(name: NameArg, version: VersionArg, json_out: JsonOpt = False) -> None:
    """Take a version out of service but keep it: listed, not served by number, aliased or released."""
    with open_registry() as reg:
        v = reg.archive(name, version)
    if json_out:
        print_json(record_json(v))
        return
    console.print(f"archived {v.name} version {v.version}: it stays stored and listed, but is not served, aliased or "
                  f"released; restore it with `tandem versions unarchive {v.name} {v.version}`", highlight=False)


@versions_app.command()
def unarchive(name: NameArg, version: VersionArg, json_out: JsonOpt = False) -> None:
    """Put an archived version back in service: it can be served, aliased and released again."""
    with open_registry() as reg:
        v = reg.unarchive(name, version)
    if json_out:
        print_json(record_json(v))
        return
    console.print(f"{v.name} version {v.version} is in service: it can be served, aliased and released", highlight=False)


@versions_app.command()
def delete(name: NameArg, version: VersionArg,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking first.")] = False,
           json_out: JsonOpt = False) -> None:
    """Delete a version for good (refused while an alias, an OTA release or a pin uses it; its number is never reused)."""
    from tandem.cli.info import _fmt_bytes

    with open_registry() as reg:
        v = reg.check_delete(name, version)  # a refusal comes before the question
        if not yes:
            if not sys.stdin.isatty():
                raise InvalidRequest(f"deleting {name} version {version} cannot be undone and there is no terminal to "
                                     "ask: add --yes to delete it")
            question = (f"Delete {name} version {v.version} ({_fmt_bytes(v.size)}, pushed {when(v.created)}) for good? "
                        "It cannot be restored (`tandem versions archive` keeps it instead)")
            if not typer.confirm(question, default=False, err=True):
                err_console.print("nothing deleted", highlight=False)
                raise typer.Exit(1)
        v = reg.delete_version(name, version)
    if json_out:
        print_json({**record_json(v), "deleted": True})
        return
    console.print(f"deleted {v.name} version {v.version} (its number is not given again); files no other version "
                  "shares leave the store at the next `tandem gc`", highlight=False)


def gc(min_age: Annotated[float, typer.Option(min=0, help="Keep unreferenced objects younger than this many "
                                              "minutes: a push or OTA release may be writing them.")] = 60.0,
       dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
       json_out: JsonOpt = False) -> None:
    """Remove stored files no version or OTA object refers to (interrupted pushes, deleted versions)."""
    from tandem.cli.info import _fmt_bytes

    with open_registry() as reg:
        r = reg.gc(min_age * 60, dry_run=dry_run)
    if json_out:
        print_json(record_json(r))
        return
    verb = "would remove" if r.dry_run else "removed"
    console.print(f"{verb} {r.objects} unreferenced object(s) ({_fmt_bytes(r.bytes)}), {r.folders} bundle folder(s) of "
                  f"deleted versions and {r.temporary} leftover temporary file(s); {r.referenced} object(s) in use",
                  highlight=False)
    if r.kept_young:
        console.print(f"kept {r.kept_young} unreferenced object(s) ({_fmt_bytes(r.kept_young_bytes)}) younger than "
                      f"{min_age:g} minutes: a push may be writing them (--min-age)", highlight=False)


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
    for command in (push, pack, models, alias, rollback, gc):
        app.command()(command)
    app.add_typer(versions_app, name="versions")
