"""`tandem serve --ray`: the very app `tandem serve` runs (create_app), as a Ray Serve ingress
deployment, so the HTTP API is the same route for route and byte for byte (Ray adds an
``x-request-id`` header; it changes nothing else).

Requests reach the replicas through Ray Serve's HAProxy ingress where Tandem starts the Ray instance
(TANDEM_RAY_HAPROXY, on by default): HAProxy forwards HTTP to each replica's own server. Ray's
Python proxy, the alternative, cost 4 ms of CPU per request here, more than the model.

One deployment, ``TandemServer``, serves every model of the registry; each replica is what one
uvicorn worker is: its own model pool with Tandem's dynamic batching (so Ray Serve's @serve.batch
is not used), its own alias watcher, its own OTA service. What replicas must agree on lives outside
them: the registry database (PostgreSQL for more than one host), the artifact store
(TANDEM_ARTIFACTS=s3://… across hosts, or a shared filesystem), rate limits in Redis
(TANDEM_REDIS_URL). A replica gets the command's settings, pickled, but for TANDEM_HOME: a replica
whose node has its own TANDEM_HOME (set at `ray start`) keeps its caches there (the artifact store's
local copies, the bundle folders it builds), so no node needs a folder of another. A moved
alias is served by every replica within TANDEM_ALIAS_POLL_S (each replica polls the registry) plus
the time to load and warm the version it now points to, if that replica has not loaded it yet.

A replica that dies (its process killed, its node lost) takes the requests in flight on it with it;
Ray Serve's proxy routes new requests to the other replicas and the controller starts a new one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette

from tandem.errors import ConfigError
from tandem.ray_cluster import connected, local_cpus, require_ray
from tandem.settings import RaySettings, Settings

log = logging.getLogger(__name__)
APP_NAME = "tandem"
DEPLOYMENT = "TandemServer"


@dataclass(frozen=True)
class Scaling:
    """A fixed number of replicas, or Ray Serve's autoscaler between ``min`` and ``max`` replicas
    aiming at ``target`` requests in flight per replica."""

    replicas: int = 1
    autoscale: tuple[int, int, float] | None = None

    @classmethod
    def parse(cls, replicas: int | None, autoscale: str | None) -> Scaling:
        if autoscale is None:
            return cls(replicas or 1)
        if replicas is not None:
            raise ConfigError("pass --replicas or --autoscale, not both")
        try:
            lo, hi, target = (p.strip() for p in autoscale.split(","))
            parsed = (int(lo), int(hi), float(target))
        except ValueError:
            raise ConfigError(f"--autoscale {autoscale!r}: expected min,max,target_ongoing_requests, "
                              "e.g. 1,4,8") from None
        if not (0 <= parsed[0] <= parsed[1] and parsed[1] >= 1 and parsed[2] > 0):
            raise ConfigError(f"--autoscale {autoscale!r}: need 0 <= min <= max, max >= 1 and a target above 0")
        return cls(parsed[1], parsed)

    @property
    def most(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas

    def options(self) -> dict[str, Any]:
        if self.autoscale is None:
            return {"num_replicas": self.replicas}
        lo, hi, target = self.autoscale
        return {"autoscaling_config": {"min_replicas": lo, "max_replicas": hi, "target_ongoing_requests": target,
                                       "initial_replicas": max(lo, 1)}}


class TandemServer:
    """The ingress: Ray Serve calls ``__serve_build_asgi_app__`` on each replica once its
    constructor has run, and runs the app's lifespan (registry, model pool, OTA) there."""

    def __init__(self, settings: Settings) -> None:
        self.settings = node_local(settings, os.environ.get("TANDEM_HOME"))

    def __serve_build_asgi_app__(self) -> Starlette:
        from tandem.server.app import create_app

        return create_app(self.settings)


def node_local(settings: Settings, node_home: str | None) -> Settings:
    """The settings a replica runs with on its node: the command's, but for the Tandem home, which is the
    node's own TANDEM_HOME where the node sets one (`ray start` with it in the environment; on a machine of
    its own the replica inherits the command's, the same). The home holds caches a node builds for itself
    from the registry (the artifact store's local copies, bundle folders). Where the registry itself is
    under the home (TANDEM_DATABASE_URL or TANDEM_ARTIFACTS unset), those stay the command's paths: a
    node's empty folder is not the registry."""
    if not node_home or Path(node_home) == settings.home:
        return settings
    update: dict[str, Any] = {"home": Path(node_home)}
    if settings.database_url is None or not settings.database_url.get_secret_value():
        update["database_url"] = SecretStr(settings.registry_url)
    if not settings.artifacts:
        update["artifacts"] = str(settings.home / "objects")
    return settings.model_copy(update=update)


def cluster_warnings(settings: Settings, host: str = "0.0.0.0") -> list[str]:
    """What keeps replicas on other machines from serving what this command serves (``host``: --host)."""
    problems = []
    if settings.ray_haproxy and _loopback(host):
        # Ray Serve's direct ingress: each replica's own HTTP server listens on the proxy's host.
        problems.append(f"replicas listen on --host {host} too, where HAProxy on another machine cannot reach them: "
                        "use --host 0.0.0.0 (or an address every node reaches)")
    if not settings.registry_url.startswith("postgresql"):
        problems.append(f"the registry is {settings.registry_location}: replicas on other machines need one "
                        "database they all reach (TANDEM_DATABASE_URL=postgresql+psycopg://…)")
    if not (settings.artifacts or "").startswith("s3://"):
        problems.append(f"artifacts are in the folder {settings.artifacts or settings.home / 'objects'}: replicas on "
                        "other machines need it mounted at the same path, or TANDEM_ARTIFACTS=s3://BUCKET/PREFIX")
    return problems


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def haproxy_env(settings: RaySettings, drain_s: float = 5.0, base: Path | None = None) -> dict[str, str]:
    """Environment for a Ray instance whose Serve fronts its replicas with HAProxy (settings.ray_haproxy).
    Ray's defaults put HAProxy's files under /tmp/haproxy-serve and its stats, metrics and fallback
    proxy on fixed ports: two instances on one machine would collide, so each gets its own. A
    stopping replica drains for ``drain_s`` (Ray's default, 30 s, is for HAProxies on other hosts
    to hear of it; here HAProxy reloads within a second), so Ctrl-C does not wait half a minute.
    ``base``: the folder for HAProxy's files (default /tmp/thap-PID; several nodes of a cluster on one
    machine each need their own)."""
    if not settings.ray_haproxy:
        return {}
    # Ray adds a 64-character folder below this, and HAProxy's admin socket path may not exceed 97 bytes.
    base = base or Path("/tmp") / f"thap-{os.getpid()}"
    base.mkdir(parents=True, exist_ok=True)
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s),
        # A replica that dies leaves HAProxy idle keep-alive connections to it: a request sent on one
        # meets a dead process. Retry it on another replica where HAProxy still holds the whole
        # request (bodies within its buffer; Tandem's POST routes are safe to repeat), and take the
        # dead replica out at its first error rather than its third.
        "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
        "RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT": "1",
        # HAProxy retries only a request that fits its buffer (tune.bufsize; Ray's default, 16 KiB, is less than
        # one photo's pixels). 128 KiB holds an OIP request of a face-sized input or a phone's JPEG, at a cost
        # of up to two such buffers per request in flight.
        "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": os.environ.get("RAY_SERVE_HAPROXY_TUNE_BUFSIZE", "131072"),
        # Under bench/scale's load on 2 cores, Ray's HAProxyManager took 0.08 cores with HAProxy's
        # Prometheus exporter on and Ray Serve exporting its request metrics ten times a second, 0.01
        # without: CPU the replica needs. Tandem's /metrics counts every request anyway; set either
        # variable to have Ray's back.
        "RAY_SERVE_HAPROXY_METRICS_ENABLED": os.environ.get("RAY_SERVE_HAPROXY_METRICS_ENABLED", "0"),
        "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": os.environ.get("RAY_SERVE_METRICS_EXPORT_INTERVAL_MS", "1000"),
        # Ray starts HAProxy with 4 threads. One HAProxy thread forwards tens of thousands of requests a second,
        # far more than a core's Python replica answers; each more is a thread waking on the cores the replicas
        # need: under bench/scale's load on 2 cores HAProxy took 0.16 ms of CPU per request with 4 and 0.10 with 1.
        "RAY_SERVE_HAPROXY_NBTHREAD": os.environ.get("RAY_SERVE_HAPROXY_NBTHREAD", str(max(1, local_cpus() // 4))),
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
        **{var: str(_free_port()) for var in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
                                              "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replica_settings(settings: Settings, scaling: Scaling, local: bool) -> Settings:
    """On a machine of its own, replicas share its cores the way uvicorn workers do (models.py sizes
    the model calls in flight by TANDEM_WORKERS); on a cluster each replica keeps the given value."""
    if not local:
        return settings
    return settings.model_copy(update={"workers": max(1, min(scaling.most, local_cpus()))})


# Ray Serve's own per-request access log costs the replica and the proxy CPU on every request;
# Tandem's access log (TANDEM_ACCESS_LOG) already writes one JSON line per request.
SERVE_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}


def application(settings: Settings, scaling: Scaling, local: bool = False) -> Any:
    """The app as a Ray Serve application: the ``TandemServer`` deployment bound to ``settings``."""
    require_ray()
    from ray import serve

    ingress = serve.ingress()(TandemServer)
    placement: dict[str, Any] = (
        {"max_replicas_per_node": settings.ray_max_replicas_per_node} if settings.ray_max_replicas_per_node else {})
    deployment = serve.deployment(
        name=DEPLOYMENT,
        ray_actor_options={"num_cpus": settings.ray_replica_cpus},
        max_ongoing_requests=settings.ray_max_ongoing_requests,
        **placement,
        # The app answers its own 504 after TANDEM_REQUEST_TIMEOUT_S; a replica stopping waits that long for it.
        graceful_shutdown_timeout_s=settings.request_timeout_s,
        **scaling.options(),
    )(ingress)
    return deployment.bind(replica_settings(settings, scaling, local))


def app(args: dict[str, Any] | None = None) -> Any:
    """Ray Serve's application builder, for a Serve config rather than `tandem serve --ray`: KubeRay's
    RayService (``serveConfigV2``, ``import_path: tandem.server.ray_serve:app``), `serve deploy`, `serve run
    tandem.server.ray_serve:app replicas=2`. ``args``: ``replicas`` (N) or ``autoscale`` (min,max,target).
    Every other setting is read from the TANDEM_* environment of the process Ray Serve builds it in, so
    every node of such a cluster is given the same TANDEM_* variables (docs/scale.md, "Deployment").
    A composition root, like create_app: Ray Serve imports and calls it."""
    from tandem.settings import get_settings

    args = dict(args or {})
    if unknown := set(args) - {"replicas", "autoscale"}:
        raise ConfigError(f"tandem.server.ray_serve:app takes args replicas or autoscale, not {', '.join(sorted(unknown))}")
    try:
        replicas = int(args["replicas"]) if "replicas" in args else None
    except ValueError:
        raise ConfigError(f"args.replicas {args['replicas']!r}: expected a whole number of replicas") from None
    autoscale = str(args["autoscale"]) if "autoscale" in args else None
    return application(get_settings(), Scaling.parse(replicas, autoscale))


def deploy(settings: Settings, scaling: Scaling, host: str, port: int, local: bool = True) -> None:
    """Start Ray Serve's proxy on host:port (if not running) and (re)deploy the app at "/"; returns
    once every replica has loaded its models and answers."""
    require_ray()
    from ray import serve

    # Where Serve is running already (another app, `serve start`), its proxies stay as they are.
    serve.start(http_options={"host": host, "port": port}, proxy_location=settings.ray_proxy_location)
    serve.run(application(settings, scaling, local), name=APP_NAME, route_prefix="/", logging_config=SERVE_LOGGING)


def undeploy() -> None:
    from ray import serve

    serve.delete(APP_NAME)


def serve_forever(settings: Settings, scaling: Scaling, host: str, port: int, address: str | None,
                  verbose: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """`tandem serve --ray`: deploy, then wait for Ctrl-C or SIGTERM. A local Ray instance this
    started is stopped after; on a cluster only the app is deleted (its proxy stays with the cluster)."""
    ingress_env = {} if address or settings.ray_address else haproxy_env(settings.ray)
    # Read by Ray Serve's modules when they are imported, here and in the processes Ray starts.
    os.environ.update(ingress_env)
    from ray import serve

    stop = threading.Event()
    with connected(address, settings.ray, verbose) as local:
        # After ray.init, which sets its own SIGTERM handler (exit at once: status 15 or 1, the app left
        # deployed): systemd, Docker and Kubernetes stop with SIGTERM, and it must stop as Ctrl-C does.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        deploy(settings, scaling, host, port, local)
        if on_ready is not None:
            on_ready()
        stop.wait()
        if local:
            serve.shutdown()
        else:
            undeploy()
    if "RAY_SERVE_HAPROXY_SERVER_STATE_BASE" in ingress_env:
        shutil.rmtree(ingress_env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], ignore_errors=True)
