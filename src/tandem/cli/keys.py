"""`tandem keys create|list|revoke`: API keys for the server (stored hashed in the registry)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from tandem.cli.ota import signing_app
from tandem.cli.output import console, err_console, print_json, table
from tandem.cli.registry import JsonOpt, open_registry, record_json, when

app = typer.Typer(help="API keys for `tandem serve`: create, list, revoke; `signing` for OTA signing keys.",
                  no_args_is_help=True)
app.add_typer(signing_app, name="signing")


class ScopeChoice(StrEnum):
    predict = "predict"
    device = "device"
    admin = "admin"


@app.command()
def create(
    scope: Annotated[ScopeChoice, typer.Option(help="predict: inference routes; device: OTA downloads; admin: everything.")],
    label: Annotated[str, typer.Option(help="A note saying whose key this is.")] = "",
    model: Annotated[list[str] | None, typer.Option(
        "--model", help="Device keys: a model this key, and every device registered with it, may see over the air "
        "(repeat for more). Others answer 404, as models that do not exist.")] = None,
    app: Annotated[list[str] | None, typer.Option(
        "--app", help="Device keys: the models of an app (those whose manifests list it, e.g. celebmatch) this "
        "key and its devices may see (repeatable). Without --model and --app: every model.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a key. It is printed once and cannot be shown again (only its hash is stored)."""
    from tandem.registry.records import ModelScope

    with open_registry() as reg:
        token, info = reg.create_key(scope.value, label, ModelScope(tuple(model or ()), tuple(app or ())))
    if json_out:
        print_json({"key": token, **record_json(info)})
        return
    console.print(token, highlight=False, soft_wrap=True)
    sees = "" if info.model_scope.everything else f" for {info.model_scope.describe()}"
    err_console.print(f"[yellow]created {info.scope} key {info.key_id}{sees}: copy the key above now, it cannot be "
                      "shown again[/] (send it as `Authorization: Bearer <key>`)", highlight=False)


@app.command("list")
def list_keys(json_out: JsonOpt = False) -> None:
    """List keys (ids, scopes, labels; never the secrets)."""
    with open_registry() as reg:
        keys = reg.list_keys()
    if json_out:
        print_json(record_json(keys))
        return
    if not keys:
        console.print("no API keys yet; create one with `tandem keys create --scope predict`")
        return
    t = table("key id", "scope", "models", "label", "created", "revoked")
    for k in keys:
        t.add_row(k.key_id, k.scope, k.model_scope.describe() if k.scope == "device" else "", k.label,
                  when(k.created), when(k.revoked))
    console.print(t)


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
