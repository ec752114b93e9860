"""`tandem release|releases|release-halt|release-rollback|pin|unpin` and `tandem keys signing ...`:
over-the-air delivery of registry versions to devices (docs/ota.md)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from tandem.cli.output import console, err_console, get_settings, print_json, table
from tandem.cli.registry import JsonOpt, open_registry, record_json, when

if TYPE_CHECKING:
    from tandem.registry.ota import Ota
    from tandem.registry.ota.records import ReleaseInfo

ChannelOpt = Annotated[str, typer.Option("--channel", "-c", help="Release channel, e.g. production or beta.")]
NameArg = Annotated[str, typer.Argument(help="Model name.")]
VersionArg = Annotated[int, typer.Argument(min=1, help="Version number (`tandem versions NAME`).")]


def _ota(reg) -> Ota:
    from tandem.registry.ota import Ota

    return Ota(reg, get_settings().ota)


def _rules(r: ReleaseInfo) -> str:
    parts = []
    if r.min_app_version or r.max_app_version:
        parts.append(f"app {r.min_app_version or ''}..{r.max_app_version or ''}")
    if r.platforms:
        parts.append("/".join(r.platforms))
    if r.min_os_version:
        parts.append(f"OS ≥ {r.min_os_version}")
    if r.min_ram_mb:
        parts.append(f"RAM ≥ {r.min_ram_mb} MB")
    if r.max_failure_rate is not None:
        parts.append(f"gate {r.max_failure_rate:.1%} of ≥ {r.min_devices} devices")
    if r.variants:
        parts.append(f"variants {'/'.join(r.variants)}")
    return ", ".join(parts) or "all devices"


def _health(r: ReleaseInfo) -> str:
    h = r.health
    if not h.devices:
        return "no reports"
    text = f"{h.devices} devices, {h.failed_devices} failed ({h.failure_rate:.1%}); {h.reports} reports"
    return text + (f", p99 {h.p99_ms_mean:.1f} ms" if h.p99_ms_mean is not None else "")


def release(
    name: NameArg,
    version: VersionArg,
    channel: ChannelOpt = "production",
    percent: Annotated[float | None, typer.Option(min=0, max=100, help="Share of devices (0-100; a new release: 100). Widening keeps every device already in.")] = None,
    min_app_version: Annotated[str | None, typer.Option(help="Lowest app version that gets it (e.g. 2.3); '' clears.")] = None,
    max_app_version: Annotated[str | None, typer.Option(help="Highest app version that gets it (inclusive); '' clears.")] = None,
    platform: Annotated[list[str] | None, typer.Option("--platform", help="Only these platforms (repeat it); 'all' clears.")] = None,
    min_os_version: Annotated[str | None, typer.Option(help="Lowest OS version (e.g. 12); '' clears.")] = None,
    min_ram_mb: Annotated[int | None, typer.Option(min=0, help="Least device RAM in MB; 0 clears.")] = None,
    max_failure_rate: Annotated[float | None, typer.Option(min=0, max=1, help="Health gate: halt and roll back when more than this share of devices fail (0.05 = 5%; each device counts once, by its latest report).")] = None,
    min_devices: Annotated[int | None, typer.Option(min=1, help="Health gate: distinct devices that must report before it judges (default TANDEM_OTA_GATE_MIN_DEVICES, 20).")] = None,
    no_health_gate: Annotated[bool, typer.Option("--no-health-gate", help="Turn the health gate off.")] = False,
    variants: Annotated[str | None, typer.Option("--variants", help="Only these variants of the version, comma-separated keys or formats (e.g. onnx,litert-int8); devices whose runtime has none stay where they are. 'all' clears.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Offer a version to devices on a channel, or change its rollout (what you leave out stays as it was)."""
    platforms = [] if platform == ["all"] else platform
    offered = None if variants is None else [] if variants.strip() == "all" else \
        [v for v in variants.split(",") if v.strip()] or [variants]
    with open_registry() as reg:
        ota = _ota(reg)
        created = ota.keys.ensure_signing_key()
        working = console.status("encrypting the files and making delta patches…", spinner="dots")
        with contextlib.nullcontext() if json_out else working:
            r = ota.releases.release(name, version, channel, percent=percent, min_app_version=min_app_version,
                                     max_app_version=max_app_version, platforms=platforms,
                                     min_os_version=min_os_version, min_ram_mb=min_ram_mb,
                                     max_failure_rate=max_failure_rate, min_devices=min_devices,
                                     no_health_gate=no_health_gate, variants=offered)
    if json_out:
        print_json({**record_json(r), "created_signing_key": record_json(created)})
        return
    if created is not None:
        err_console.print(f"created signing key {created.key_id}: devices must trust it (GET /v1/ota/signing-keys, "
                          "or `tandem keys signing list --json`)", highlight=False)
    console.print(f"released {r.name} v{r.version} on {r.channel} to {r.percent:g}% of devices ({_rules(r)})",
                  highlight=False)


def releases(name: NameArg, channel: Annotated[str | None, typer.Option("--channel", "-c", help="Only this channel.")] = None,
             json_out: JsonOpt = False) -> None:
    """A model's releases: their rules, state and health figures, and the pinned devices."""
    with open_registry() as reg:
        ota = _ota(reg)
        found = ota.releases.releases(name, channel)
        pins = ota.releases.pins(name, channel)
    if json_out:
        print_json({"releases": [{**record_json(r), "failure_rate": r.health.failure_rate, "devices": r.health.devices,
                                  "failed_devices": r.health.failed_devices} for r in found],
                    "pins": record_json(pins)})
        return
    if not found and not pins:
        console.print(f"{name} has no releases yet; release a version with `tandem release {name} VERSION`",
                      highlight=False)
        return
    t = table("channel", "version", "state", "percent", "rules", "health", "updated", "note", title=name)
    for r in found:
        t.add_row(r.channel, str(r.version), r.state, f"{r.percent:g}%", _rules(r), _health(r), when(r.updated), r.note)
    console.print(t)
    if pins:
        p = table("channel", "device", "version", "since", title="pinned devices")
        for pin in pins:
            p.add_row(pin.channel, pin.device_id, str(pin.version), when(pin.created))
        console.print(p)


def release_halt(name: NameArg, version: VersionArg, channel: ChannelOpt = "production",
                 json_out: JsonOpt = False) -> None:
    """Stop a rollout where it is: devices that have the version keep it, no new devices get it."""
    with open_registry() as reg:
        r = _ota(reg).releases.halt(name, version, channel)
    if json_out:
        print_json(record_json(r))
        return
    console.print(f"halted {r.name} v{r.version} on {r.channel}; release it again to resume", highlight=False)


def release_rollback(name: NameArg, channel: ChannelOpt = "production", json_out: JsonOpt = False) -> None:
    """Roll back the channel's current release: its devices go back to the release before it."""
    with open_registry() as reg:
        r = _ota(reg).releases.rollback(name, channel)
    if json_out:
        print_json(record_json(r))
        return
    console.print(f"rolled back {r.name} v{r.version} on {r.channel} ({r.note})", highlight=False)


def pin(name: NameArg, device_id: Annotated[str, typer.Argument(help="The device's id, as its app sends it.")],
        version: VersionArg, channel: ChannelOpt = "production", json_out: JsonOpt = False) -> None:
    """Hold one device on a version, whatever the releases say (e.g. a test device on a candidate)."""
    with open_registry() as reg:
        p = _ota(reg).releases.pin(name, device_id, version, channel)
    if json_out:
        print_json(record_json(p))
        return
    console.print(f"pinned device {p.device_id} to {p.name} v{p.version} on {p.channel}", highlight=False)


def unpin(name: NameArg, device_id: Annotated[str, typer.Argument(help="The pinned device's id.")],
          channel: ChannelOpt = "production", json_out: JsonOpt = False) -> None:
    """Let a pinned device follow the channel's releases again."""
    with open_registry() as reg:
        p = _ota(reg).releases.unpin(name, device_id, channel)
    if json_out:
        print_json(record_json(p))
        return
    console.print(f"unpinned device {p.device_id} from {p.name} v{p.version} on {p.channel}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(release)
    app.command()(releases)
    app.command("release-halt")(release_halt)
    app.command("release-rollback")(release_rollback)
    app.command()(pin)
    app.command()(unpin)


# --- tandem keys signing ... --------------------------------------------------------------------

signing_app = typer.Typer(help="Ed25519 keys that sign OTA payloads: create, rotate, retire, list.",
                          no_args_is_help=True)


@signing_app.command("create")
def signing_create(json_out: JsonOpt = False) -> None:
    """Create the first signing key (refused when one is current: rotate instead)."""
    with open_registry() as reg:
        k = _ota(reg).keys.create_signing_key()
    _show_key(k, "created", json_out)


MAX_OVERLAP = timedelta(days=366)


def parse_overlap(text: str) -> timedelta:
    """``7d``, ``12h``, ``90m``, ``1d12h``, ``30s`` or ``0``."""
    from tandem.errors import InvalidRequest
    from tandem.registry.expiry import duration_seconds

    given = text.strip()
    seconds = 0 if given == "0" else duration_seconds(given)
    if seconds is None:
        raise InvalidRequest(f"--overlap {text!r:.40} is not a duration: give e.g. 7d, 12h, 90m, 1d12h, 30s, or 0 to "
                             "switch at once")
    overlap = timedelta(seconds=seconds)
    if overlap > MAX_OVERLAP:
        raise InvalidRequest(f"--overlap {given} is more than a year: the old key would go on signing that long; "
                             "give a shorter one")
    return overlap


@signing_app.command("rotate")
def signing_rotate(
    overlap: Annotated[str, typer.Option(
        "--overlap", metavar="DURATION", help="How long the new key is published before it signs (7d, 12h, 90m, "
        "1d12h; 0: at once). Meanwhile every answer carries it, endorsed by the current key, and devices learn it.")]
        = "7d",
    now: Annotated[bool, typer.Option(
        "--now", help="Start signing with the waiting next key now (or, with none waiting, a new key at once).")]
        = False,
    json_out: JsonOpt = False,
) -> None:
    """Publish a new signing key now and switch to it after --overlap; the old key stays listed (and trusted by
    devices) until you retire it."""
    wait = timedelta(0) if now else parse_overlap(overlap)
    with open_registry() as reg:
        keys = _ota(reg).keys
        before = {k.key_id: k.state for k in keys.signing_keys()}
        k = keys.rotate_signing_key(overlap=wait)
    if k.state == "next" and k.activates is not None:
        if not json_out:
            console.print(f"next signing key {k.key_id} (public key {k.public_key}) starts signing at "
                          f"{k.activates.astimezone():%Y-%m-%d %H:%M:%S %Z}; until then every answer carries it, endorsed by the current key, "
                          "and devices learn it", highlight=False)
        _show_key(k, "", json_out, quiet=True)
        return
    if not json_out:
        err_console.print("[yellow]no overlap: the new key signs at once. Devices running an SDK that follows "
                          "rotations trust it through the old key's endorsement; apps that know only the old key "
                          "and cannot learn keys are refused until they ship the new one[/]", highlight=False)
    _show_key(k, "started signing with waiting" if before.get(k.key_id) == "next" else "rotated to", json_out)


@signing_app.command("retire")
def signing_retire(key_id: Annotated[str, typer.Argument(help="A key id from `tandem keys signing list`.")],
                   json_out: JsonOpt = False) -> None:
    """Stop listing a key to devices and tell them, in every answer, to drop it. A device that trusts only a
    retired key still follows (its endorsement of the key after it stays in answers), then drops it. A next key
    retired never starts signing and is vouched for no more."""
    with open_registry() as reg:
        k = _ota(reg).keys.retire_signing_key(key_id)
    _show_key(k, "retired", json_out)


@signing_app.command("list")
def signing_list(json_out: JsonOpt = False) -> None:
    """Every signing key: its id, public key, state (next, current, previous, retired), when it starts or
    started signing, when it was retired."""
    with open_registry() as reg:
        keys = _ota(reg).keys
        keys.activate_due()  # a next key whose time has come is current, whether or not a server saw it yet
        found = keys.signing_keys()
    if json_out:
        print_json(record_json(found))
        return
    if not found:
        console.print("no signing keys yet; create one with `tandem keys signing create`")
        return
    t = table("key id", "public key (base64)", "state", "signs from", "created", "retired")
    for k in found:
        t.add_row(k.key_id, k.public_key, k.state, when(k.activates if k.state == "next" else k.activated),
                  when(k.created), when(k.retired))
    console.print(t)


def _show_key(k, verb: str, json_out: bool, quiet: bool = False) -> None:
    if json_out:
        print_json(record_json(k))
        return
    if not quiet:
        console.print(f"{verb} signing key {k.key_id} (public key {k.public_key})", highlight=False)
