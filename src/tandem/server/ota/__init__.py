"""Over-the-air delivery on the server (docs/ota.md is the contract):

- devices.py: ``POST /v1/devices``, where an app install registers and gets its own credential
- endpoints.py: the ``/v1/ota/*`` routes a registered device calls (check, downloads, keys, reports)
- service.py: a worker's OTA side, the state it answers from kept current with the registry
- state.py: that state for one registry generation, indexed for the check route
- downloads.py: sending store objects with ETags and byte ranges
- reports.py: device health reports, held in memory and written in batches

What they read and write is the registry's OTA side (registry/ota/).
"""

from __future__ import annotations

from starlette.routing import Route

from tandem.server.ota import devices, endpoints


def routes() -> list[Route]:
    """Device registration, then the OTA routes."""
    return [*devices.routes(), *endpoints.routes()]
