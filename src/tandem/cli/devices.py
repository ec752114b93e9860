"""`tandem devices list|revoke`: the devices registered with `POST /v1/devices` (docs/ota.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from tandem.cli.output import console, print_json, table
from tandem.cli.registry import JsonOpt, open_registry, record_json, when

app = typer.Typer(help="Registered devices (each app install enrols once with the fleet's device key): list, "
                  "revoke one.", no_args_is_help=True)


@app.command("list")
def list_devices(
    revoked: Annotated[bool, typer.Option("--revoked/--no-revoked", help="Show revoked devices too.")] = True,
    json_out: JsonOpt = False,
) -> None:
    """Every registered device: its server-assigned id, the key it enrolled with, when; never its credential."""
    from tandem.registry.ota.devices import Devices

    with open_registry() as reg:
        found = Devices(reg).registered(revoked)
    if json_out:
        print_json(record_json(found))
        return
    if not found:
        console.print("no registered devices yet: an app registers itself with POST /v1/devices and the fleet's "
                      "device key (`tandem keys create --scope device`)")
        return
    t = table("device id", "enrolled with key", "models", "registered", "revoked")
    for d in found:
        t.add_row(d.device_id, d.enrolled_by, d.model_scope.describe(), when(d.created), when(d.revoked))
    console.print(t)


@app.command()
def revoke(device_id: Annotated[str, typer.Argument(help="The device id shown by `tandem devices list`.")],
           json_out: JsonOpt = False) -> None:
    """Revoke one device: its credential gets 401 (within TANDEM_KEY_CACHE_S); the fleet is untouched."""
    from tandem.registry.ota.devices import Devices

    with open_registry() as reg:
        info = Devices(reg).revoke(device_id)
    if json_out:
        print_json(record_json(info))
        return
    console.print(f"revoked device {info.device_id} (enrolled with key {info.enrolled_by})", highlight=False)
