"""`tandem serve`: the inference server over the models in the registry (TANDEM_HOME)."""

from __future__ import annotations

import errno
import functools
import os
import shutil
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from tandem.cli.output import console, err_console, get_settings
from tandem.errors import ConfigError

if TYPE_CHECKING:
    from tandem.settings import Settings


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes; each loads the models.")] = 1,
    max_batch_size: Annotated[int | None, typer.Option(min=1, max=1024, help="Dynamic batching: most rows per model call (TANDEM_MAX_BATCH_SIZE).")] = None,
    max_delay_ms: Annotated[float | None, typer.Option(min=0, max=1000, help="Dynamic batching: longest wait for more requests (TANDEM_MAX_DELAY_MS).")] = None,
    max_queue_ms: Annotated[float | None, typer.Option(min=0, max=600_000, help="The most a request may wait in its model's queue before it is answered 503 + Retry-After instead of late; 0: never shed (TANDEM_MAX_QUEUE_MS, default 100).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    ray: Annotated[bool, typer.Option("--ray", help="Run the same app as a Ray Serve deployment (needs tandem\\[ray]; docs/scale.md).")] = False,
    replicas: Annotated[int | None, typer.Option(min=1, max=1024, help="With --ray: replicas of the app (default 1).")] = None,
    autoscale: Annotated[str | None, typer.Option(help="With --ray: min,max,target_ongoing_requests for Ray Serve's autoscaler, e.g. 1,4,8.")] = None,
    address: Annotated[str | None, typer.Option(help="With --ray: the Ray cluster (ray://host:10001 or auto; default TANDEM_RAY_ADDRESS, else a local instance sized to this machine).")] = None,
) -> None:
    """Serve every model in the registry: Open Inference Protocol v2, TF-Serving REST, image endpoint."""
    try:
        import uvicorn  # noqa: F401 - only to say which extras are missing; run_uvicorn uses it

        from tandem.registry.registry import Registry
    except ModuleNotFoundError as e:
        raise ConfigError(f"the server needs the serve extras ({e.name} is not installed): "
                          "pip install 'tandem[serve]'") from e
    # The options over the environment's TANDEM_* settings (typer has checked their bounds, the same as
    # Settings' own); the workers get these settings themselves (run_uvicorn), not the environment.
    overrides: dict[str, Any] = {"workers": workers}
    if max_batch_size is not None:
        overrides["max_batch_size"] = max_batch_size
    if max_delay_ms is not None:
        overrides["max_delay_ms"] = max_delay_ms
    if max_queue_ms is not None:
        overrides["max_queue_ms"] = max_queue_ms
    settings = get_settings().model_copy(update=overrides)
    if not (ray and (address or settings.ray_address)):
        # Before any model is loaded: a taken port fails at once. On a Ray cluster the port is its
        # running proxy's, already listening by design.
        check_port_free(host, port)
    with Registry.open(settings.registry) as reg:  # a wrong database URL or home fails here, once, with its own message
        empty = not reg.models()
    if empty:
        err_console.print(f"[yellow]warning:[/] the registry at {escape(settings.registry_location)} holds "
                          "no models yet: model routes answer 404 until you `tandem push BUNDLE` (no restart needed)", highlight=False)
    if ray:
        _serve_on_ray(settings, host, port, workers, replicas, autoscale, address, log_level)
        return
    if replicas is not None or autoscale is not None or address is not None:
        raise ConfigError("--replicas, --autoscale and --address are for Ray Serve: add --ray")
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker keeps its own counters; prometheus_client's multiprocess mode adds them up. This one
        # stays an environment variable: prometheus_client reads it itself, when each worker imports it
        # (its value class is chosen then), before any of Tandem's code could hand it a folder.
        metrics_dir = tempfile.mkdtemp(prefix="tandem-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    console.print(f"serving the registry at {settings.registry_location} on http://{host}:{port} "
                  f"({workers} worker(s), batches up to {settings.max_batch_size} rows / "
                  f"{settings.max_delay_ms:g} ms, {_queue_budget(settings)})", highlight=False, markup=False,
                  soft_wrap=True)  # one line, however narrow the terminal: it is read like a log line
    console.print(f"the browser app: {page_url(host, port)}", highlight=False, markup=False)
    try:
        run_uvicorn(settings, host, port, log_level)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _queue_budget(settings: Settings) -> str:
    if settings.max_queue_ms <= 0:
        return "no queue budget: nothing shed"
    return f"requests queued over {settings.max_queue_ms:g} ms answered 503"


def run_uvicorn(settings: Settings, host: str, port: int, log_level: str) -> None:
    """The app on uvicorn with ``settings.workers`` processes, each given ``settings`` (uvicorn pickles its
    config, app factory and protocol included, into the worker processes it spawns)."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from tandem.server.app import create_app
    from tandem.server.connections import protocol, raise_fd_limit

    raise_fd_limit()
    # The edge's budgets (docs/serving.md, "Limits"): the guarded protocol closes connections that send no
    # complete headers in time and keeps connections under a cap; keep-alives idle past a bound close;
    # forwarding headers are read by the app (server/proxies.py) from trusted proxies only, so
    # uvicorn's own reading of them (which trusts 127.0.0.1 by default) is off.
    config = uvicorn.Config(functools.partial(create_app, settings), factory=True, host=host, port=port,
                            workers=settings.workers, access_log=False, log_level=log_level,
                            timeout_graceful_shutdown=10, http=protocol(settings.header_timeout_s,
                                                                        settings.max_connections),
                            timeout_keep_alive=settings.keep_alive_s, proxy_headers=False)
    # As uvicorn.run does, less its import string: that would make each worker build its settings anew.
    server = uvicorn.Server(config)
    try:
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if config.workers == 1 and not server.started:
        sys.exit(STARTUP_FAILURE)


def _serve_on_ray(settings: Settings, host: str, port: int, workers: int, replicas: int | None,
                  autoscale: str | None, address: str | None, log_level: str) -> None:
    from tandem.ray_cluster import require_ray

    if workers != 1:
        raise ConfigError("--workers is for uvicorn; with --ray, ask for --replicas (or --autoscale)")
    require_ray()
    from tandem.server.ray_serve import Scaling, cluster_warnings, serve_forever

    scaling = Scaling.parse(replicas, autoscale)
    if address or settings.ray_address:
        for problem in cluster_warnings(settings, host):
            console.print(f"warning: on a cluster of several machines {problem}", highlight=False, markup=False)
    how = (f"{scaling.replicas} replica(s)" if scaling.autoscale is None
           else "autoscaling {}..{} replicas at {:g} requests in flight each".format(*scaling.autoscale))
    console.print(f"starting Ray Serve for the registry at {settings.registry_location} ({how}, "
                  f"batches up to {settings.max_batch_size} rows / {settings.max_delay_ms:g} ms, "
                  f"{_queue_budget(settings)})…", highlight=False, soft_wrap=True)

    def ready() -> None:
        console.print(f"serving on http://{host}:{port} through Ray Serve; Ctrl-C stops", highlight=False)
        console.print(f"the browser app: {page_url(host, port)}", highlight=False, markup=False)

    serve_forever(settings, scaling, host, port, address, verbose=log_level in ("debug", "trace"), on_ready=ready)


def page_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the page (a wildcard address is not one to open)."""
    shown = {"0.0.0.0": "localhost", "::": "localhost", "": "localhost"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/app/"


def check_port_free(host: str, port: int) -> None:
    """ConfigError naming the port when something already listens there (port 0: any free one)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r} is not an address this machine has ({e.strerror})") from e
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            s.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use (another `tandem serve`?): stop what "
                                  f"listens there or pass another port, e.g. --port {port + 1 if port < 65535 else 8000}") from e
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}); pass another --host or --port") from e


def register(app: typer.Typer) -> None:
    app.command()(serve)
