"""`tandem keys create|list|update|revoke`: API keys for the server (stored hashed in the registry)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from tandem.cli.ota import signing_app
from tandem.cli.output import console, err_console, print_json, table
from tandem.cli.registry import JsonOpt, open_registry, record_json, when

if TYPE_CHECKING:
    from tandem.registry.records import KeyInfo

app = typer.Typer(help="API keys for `tandem serve`: create, list, update, revoke; `signing` for OTA signing keys.",
                  no_args_is_help=True)
app.add_typer(signing_app, name="signing")


class ScopeChoice(StrEnum):
    predict = "predict"
    device = "device"
    train = "train"
    admin = "admin"


RateOpt = Annotated[float | None, typer.Option(
    "--rate", help="Requests per second this key may make once its burst is spent, in place of the server's "
    "default for its scope (TANDEM_RATE_LIMIT_PER_S, TANDEM_DEVICE_RATE_LIMIT_PER_S).")]
BurstOpt = Annotated[int | None, typer.Option(
    "--burst", help="Requests this key may make at once. Default: twice --rate when --rate is given, else the "
    "server's default for its scope (TANDEM_RATE_LIMIT_BURST, TANDEM_DEVICE_RATE_LIMIT_BURST).")]
ExpiresOpt = Annotated[str | None, typer.Option(
    "--expires", metavar="WHEN", help="When the key stops working: a duration from now (90m, 12h, 30d, 2w, 1d12h) "
    "or an ISO 8601 date or time (2027-01-31, 2027-01-31T18:00, 2027-01-31T18:00Z; no zone: local time). "
    "Without it the key works until revoked.")]


def _expiry(text: str | None) -> datetime | None:
    from tandem.registry.expiry import parse_expiry

    return None if text is None else parse_expiry(text)


def _limits(info: KeyInfo) -> str:
    """The key's own bucket in words ("" when it has the server's default)."""
    if info.rate_per_s is None and info.burst is None:
        return ""
    rate = "the default rate" if info.rate_per_s is None else f"{info.rate_per_s:g}/s"
    burst = "the default burst" if info.burst is None else f"burst {info.burst}"
    return f"{rate}, {burst}"


def _summary(info: KeyInfo) -> str:
    parts = [_limits(info), "" if info.expires is None else f"expires {when(info.expires)}"]
    return "; ".join(p for p in parts if p)


@app.command()
def create(
    scope: Annotated[ScopeChoice, typer.Option(help="predict: inference routes; device: OTA downloads; train: managed training (POST /v1/trainings); admin: everything.")],
    label: Annotated[str, typer.Option(help="A note saying whose key this is.")] = "",
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Device keys: a model this key, and every device registered with it, may see over the air "
        "(repeat for more). Others answer 404, as models that do not exist.")] = None,
    app: Annotated[list[str] | None, typer.Option(
        "--app", help="Device keys: the models of an app (those whose manifests list it, e.g. celebmatch) this "
        "key and its devices may see (repeatable). Without --model and --app: every model.")] = None,
    rate: RateOpt = None,
    burst: BurstOpt = None,
    expires: ExpiresOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key. It is printed once and cannot be shown again (only its hash is stored)."""
    from tandem.registry.records import ModelScope

    expiry = _expiry(expires)  # before the registry opens: a typo costs nothing
    with open_registry() as reg:
        token, info = reg.create_key(scope.value, label, ModelScope(tuple(model or ()), tuple(app or ())),
                                     rate, burst, expiry)
    if json_out:
        print_json({"key": token, **record_json(info)})
        return
    console.print(token, highlight=False, soft_wrap=True)
    sees = "" if info.model_scope.everything else f" for {info.model_scope.describe()}"
    extra = f" ({_summary(info)})" if _summary(info) else ""
    err_console.print(f"[yellow]created {info.scope} key {info.key_id}{sees}{extra}: copy the key above now, it "
                      "cannot be shown again[/] (send it as `Authorization: Bearer <key>`)", highlight=False)


@app.command("list")
def list_keys(json_out: JsonOpt = False) -> None:
    """List keys (ids, scopes, labels, rate limits, expiry; never the secrets)."""
    with open_registry() as reg:
        keys = reg.list_keys()
    if json_out:
        print_json(record_json(keys))
        return
    if not keys:
        console.print("no API keys yet; create one with `tandem keys create --scope predict`")
        return
    now = datetime.now(UTC)
    t = table("key id", "scope", "models", "label", "rate/s", "burst", "created", "expires", "revoked")
    for k in keys:
        expiry = when(k.expires) + (" (expired)" if k.expired(now) else "")
        # A label is whatever its creator typed: data, never markup.
        t.add_row(k.key_id, k.scope, k.model_scope.describe() if k.scope == "device" else "", Text(k.label),
                  "default" if k.rate_per_s is None else f"{k.rate_per_s:g}",
                  "default" if k.burst is None else str(k.burst), when(k.created), expiry or "never", when(k.revoked))
    console.print(t)


@app.command()
def update(
    key_id: Annotated[str, typer.Argument(help="The key id shown by `tandem keys list`.")],
    rate: RateOpt = None,
    burst: BurstOpt = None,
    expires: ExpiresOpt = None,
    default_limits: Annotated[bool, typer.Option(
        "--default-limits", help="Drop the key's own rate and burst: it gets the server's default again.")] = False,
    never_expires: Annotated[bool, typer.Option("--never-expires", help="Drop the key's expiry.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Change a key's rate limit or expiry (running servers see it within TANDEM_KEY_CACHE_S). A revoked or
    expired key cannot be brought back: create a new one."""
    expiry = _expiry(expires)
    with open_registry() as reg:
        info = reg.update_key(key_id, rate, burst, expiry, default_limits, never_expires)
    if json_out:
        print_json(record_json(info))
        return
    console.print(f"{info.scope} key {info.key_id}: {_limits(info) or 'the default rate limit'}; "
                  f"{'expires ' + when(info.expires) if info.expires else 'never expires'}", highlight=False)


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key id shown by `tandem keys list`.")],
           json_out: JsonOpt = False) -> None:
    """Revoke a key: requests with it are refused from now on."""
    with open_registry() as reg:
        info = reg.revoke_key(key_id)
    if json_out:
        print_json(record_json(info))
        return
    console.print(f"revoked {info.scope} key {info.key_id} {info.label}".rstrip(), highlight=False)
