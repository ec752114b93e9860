"""A Ray cluster of several nodes on one machine, as it would be on several: each node its own
``ray start`` process tree (``--head`` for the first, ``--address HEAD`` for the rest), its own
address (the head: this machine's, as Ray resolves it; the others 127.0.0.2, 127.0.0.3, …), ports, session
folder, CPUs and custom resources, and, where the machine allows, its own core (CPU affinity, which
every process the node starts inherits), so that N nodes really have N cores between them.

    with ray_nodes(workers=1) as cluster:            # head + 1 node, 1 CPU each, pinned to cores 0 and 1
        ...tandem serve --ray --address {cluster.address}...
        cluster.kill(cluster.workers[0])             # the node is lost: SIGKILL to every process it runs

Each node runs in a session of its own (``start_new_session``), so "every process it runs" is the
processes of that session: ``kill`` and the clean-up at the end signal exactly those, by process id.
Nothing here runs ``ray stop`` (it stops every Ray process on the machine, other users' too), and no
port is Ray's default: each is picked free (Redis keeps 6379; another Ray instance keeps its own).

The head runs the dashboard on 127.0.0.1 (Ray's state API and Ray Jobs need it) and the Ray Client
server. ``env`` reaches every node's processes (replicas and workers included), with ``node_env`` for
what differs per node (its own TANDEM_HOME, say).

The cluster takes Ray's token authentication with a token of its own (RAY_AUTH_MODE=token,
RAY_AUTH_TOKEN), not whatever ~/.ray/auth_token a local `ray.init()` left on this machine (Ray turns
token auth on by itself where that file exists): a process that joins it (`tandem serve --ray
--address …`) is given ``RayNodes.client_env``; the state API calls here send the token themselves,
over HTTP, so this process needs no Ray connection of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tandem.testing.processes import free_port, until

RAY = Path(sys.executable).parent / "ray"
HEAD_IP = "127.0.0.1"  # where the head's GCS, dashboard and Ray Client server are reached from here
# Ray's workers take ports from a range per node; ours are drawn above Ray's default one (10002-19999)
# and below Ray Serve's replica ports (30000-31000, 40000-41000) and Linux's ephemeral range (32768+,
# where free_port's picks come from).
WORKER_PORTS = (20000, 29800)
WORKER_PORTS_PER_NODE = 200


@dataclass
class RayNode:
    name: str  # head, node1, node2, …
    ip: str  # the node's address as Ray knows it (Ray replaces 127.0.0.1 with the machine's own for a head)
    cpus: float
    core: int | None  # the core its processes are pinned to; None: not pinned
    temp_dir: Path
    proc: subprocess.Popen[Any] = field(repr=False)
    log: Path = field(repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # what node_env gave this node
    killed: bool = False

    def pids(self) -> list[int]:
        """Every live process of this node: those of its session (``ray start`` and what it started)."""
        return _session_pids(self.proc.pid)

    def node_id(self, cluster: RayNodes) -> str:
        """Ray's id of this node (the state API, by its address), once it has registered."""
        for node in cluster.state_api("nodes"):
            if node["state"] == "ALIVE" and (node["is_head_node"] if self.name == "head" else node["node_ip"] == self.ip):
                return str(node["node_id"])
        raise LookupError(f"Ray has no live node at {self.ip}")


@dataclass
class RayNodes:
    head: RayNode
    workers: list[RayNode]
    gcs_port: int
    dashboard_port: int
    client_port: int
    token: str = field(repr=False)
    _start: Callable[[int], RayNode] = field(repr=False)

    @property
    def client_env(self) -> dict[str, str]:
        """What a process joining this cluster needs in its environment: the cluster's auth token."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    @property
    def address(self) -> str:
        """What `--address` (and ray.init) takes to join from this machine: the head's GCS."""
        return f"{HEAD_IP}:{self.gcs_port}"

    @property
    def client_address(self) -> str:
        return f"ray://{HEAD_IP}:{self.client_port}"

    @property
    def dashboard(self) -> str:
        return f"http://{HEAD_IP}:{self.dashboard_port}"

    @property
    def nodes(self) -> list[RayNode]:
        return [self.head, *self.workers]

    def add_node(self) -> RayNode:
        """One more node (the next core, the worker nodes' CPUs and resources), once Ray lists it alive."""
        node = self._start(len(self.workers) + 1)
        self.workers.append(node)
        wait_alive(self, [n for n in self.nodes if not n.killed])
        return node

    def kill(self, node: RayNode) -> float:
        """Lose ``node`` as a machine is lost: SIGKILL to every process it runs, all at once. Returns the
        time (time.monotonic()) of the kill."""
        if node is self.head:
            raise ValueError("kill a worker node: the head holds the cluster (GCS, Serve's controller)")
        at = time.monotonic()
        _kill_session(node.proc.pid)
        node.killed = True
        return at

    def node_names(self) -> dict[str, str]:
        """Ray's node id → our name of the node (head, node1, …), for every node Ray lists, dead ones too."""
        by_ip = {n.ip: n.name for n in self.nodes}
        return {str(n["node_id"]): "head" if n["is_head_node"] else by_ip.get(n["node_ip"], n["node_ip"])
                for n in self.state_api("nodes")}

    def serve_replicas(self, app: str, deployment: str) -> dict[str, int]:
        """Ray Serve's replica states of one deployment (RUNNING, STARTING, …: how many in each), from the
        dashboard's Serve API; empty while the app is not deployed."""
        r = httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=30,
                      headers={"authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        found = (r.json().get("applications") or {}).get(app, {}).get("deployments", {}).get(deployment, {})
        states: dict[str, int] = {}
        for replica in found.get("replicas") or []:
            states[replica["state"]] = states.get(replica["state"], 0) + 1
        return states

    def haproxy_replicas(self) -> dict[str, int]:
        """Ray Serve's HAProxy ingress on the head (its stats port, RAY_SERVE_HAPROXY_STATS_PORT, given to the head
        in its node_env): the replicas it sends requests to now (UP, passing its health checks), each with the
        number of requests it has sent there."""
        port = self.head.env["RAY_SERVE_HAPROXY_STATS_PORT"]
        rows = httpx.get(f"http://{HEAD_IP}:{port}/stats;csv", timeout=10).text.splitlines()
        names = rows[0].lstrip("# ").split(",")
        out = {}
        for row in rows[1:]:
            cells = dict(zip(names, row.split(","), strict=False))
            if cells.get("svname", "").startswith("SERVE_REPLICA") and cells.get("status") == "UP":
                out[cells["svname"]] = int(cells["stot"])
        return out

    def state_api(self, resource: str, filters: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """Ray's state API (the dashboard's /api/v0/RESOURCE: nodes, actors, …), ``filters`` as (key, value)
        pairs that must be equal."""
        params: list[tuple[str, str | int | float | bool | None]] = [("limit", 10_000), ("detail", "false")]
        for key, value in filters or []:
            params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        r = httpx.get(f"{self.dashboard}/api/v0/{resource}", params=params, timeout=30,
                      headers={"authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        body = r.json()
        if not body.get("result"):
            raise RuntimeError(f"Ray's state API: {body.get('msg')}")
        rows: list[dict[str, Any]] = body["data"]["result"]["result"]
        return rows

    def placement(self, class_name: str, state: str | None = "ALIVE") -> dict[str, int]:
        """How many actors of ``class_name`` (``ServeReplica:tandem:TandemServer``, ``RayTrainWorker``) each
        node holds, by our name of the node (Ray's state API); ``state`` None: dead ones too."""
        names = self.node_names()
        out: dict[str, int] = {}
        filters = [("class_name", class_name)] + ([("state", state)] if state else [])
        for actor in self.state_api("actors", filters):
            name = names.get(str(actor["node_id"]), str(actor["node_id"]))
            out[name] = out.get(name, 0) + 1
        return out


def wait_alive(cluster: RayNodes, nodes: list[RayNode], timeout_s: float = 90.0) -> None:
    """Until Ray lists every one of ``nodes`` alive; the head's address is read from there."""
    want = {n.ip for n in nodes if n.name != "head"}

    def alive() -> bool:
        for n in nodes:
            if n.proc.poll() is not None:
                raise RuntimeError(f"Ray node {n.name} exited with {n.proc.returncode}: {_tail(n.log)}")
        try:
            live = [x for x in cluster.state_api("nodes") if x["state"] == "ALIVE"]
        except (httpx.HTTPError, RuntimeError, KeyError):  # the dashboard is still starting
            return False
        heads = [x["node_ip"] for x in live if x["is_head_node"]]
        for n in nodes:
            if n.name == "head" and heads:
                n.ip = heads[0]
        return bool(heads) and want <= {x["node_ip"] for x in live}

    until(alive, f"Ray nodes {sorted(want)} to be alive", timeout=timeout_s, every=0.5)


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


@contextlib.contextmanager
def ray_nodes(workers: int = 1, *, head_cpus: float = 1, worker_cpus: float = 1,
              head_resources: Mapping[str, float] | None = None, worker_resources: Mapping[str, float] | None = None,
              pin: bool = True, env: Mapping[str, str] | None = None,
              node_env: Callable[[str], Mapping[str, str]] | None = None, object_store_mb: int = 300,
              timeout_s: float = 180.0) -> Iterator[RayNodes]:
    """A head and ``workers`` more nodes; everything they started is stopped on exit. With ``pin`` (and
    as many cores as nodes) node k runs on core k only; with fewer cores nodes are not pinned, and
    RayNode.core says so. ``head_resources``/``worker_resources``: custom resources each node offers
    (`--resources`). ``env``: added to every node's environment; ``node_env(name)``: to one node's."""
    if not RAY.exists():
        raise RuntimeError(f"no {RAY}: the multi-node tests need the ray extras (pip install 'tandem[ray]')")
    cores = usable_cores()
    pinned = pin and len(cores) >= workers + 1 and shutil.which("taskset") is not None
    root = Path("/tmp") / f"trn-{secrets.token_hex(3)}"  # short: Ray's socket paths may not exceed 107 bytes
    root.mkdir(mode=0o700)
    gcs_port, dashboard_port, client_port = free_port(), free_port(), free_port()
    ranges = _worker_port_ranges(workers + 1)
    started: list[RayNode] = []
    token = secrets.token_hex(32)
    # Serve's controller gives a new proxy (HAProxy's manager) 5 s to answer, then kills it: too short for a
    # node of one core on a loaded machine (seen here at a load of 12 on 2 cores).
    base_env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
                **(env or {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    base_env.pop("RAY_AUTH_TOKEN_PATH", None)

    def start(index: int) -> RayNode:
        name = "head" if index == 0 else f"node{index}"
        ip = HEAD_IP if index == 0 else f"127.0.0.{index + 1}"  # the head's: corrected by wait_alive
        cpus = head_cpus if index == 0 else worker_cpus
        resources = head_resources if index == 0 else worker_resources
        temp = root / name
        temp.mkdir()
        lo, hi = ranges[index] if index < len(ranges) else _worker_port_ranges(index + 1)[index]
        cmd = [str(RAY), "start", "--block", "--disable-usage-stats", "--node-ip-address", ip,
               "--num-cpus", f"{cpus:g}", "--num-gpus", "0", "--resources", json.dumps(dict(resources or {})),
               "--temp-dir", str(temp), "--object-store-memory", str(object_store_mb * 1024 * 1024),
               "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
               "--min-worker-port", str(lo), "--max-worker-port", str(hi),
               "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
               "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]
        if index == 0:
            cmd += ["--head", "--port", str(gcs_port), "--ray-client-server-port", str(client_port),
                    "--include-dashboard", "true", "--dashboard-host", HEAD_IP, "--dashboard-port", str(dashboard_port)]
        else:
            cmd += ["--address", f"{HEAD_IP}:{gcs_port}"]
        core = cores[index] if pinned and index < len(cores) else None
        if core is not None:
            cmd = ["taskset", "-c", str(core), *cmd]
        log = root / f"{name}.log"
        own = dict(node_env(name)) if node_env else {}
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env={**base_env, **own}, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        node = RayNode(name, ip, cpus, core, temp, proc, log, own)
        started.append(node)
        return node

    try:
        head = start(0)
        cluster = RayNodes(head, [], gcs_port, dashboard_port, client_port, token, start)
        try:
            until(lambda: _answers(cluster, head), "the Ray head's dashboard to answer",
                  timeout=timeout_s, every=0.5)
        except AssertionError as e:
            logs = head.temp_dir / "session_latest" / "logs"
            raise AssertionError(f"{e}: {_tail(head.log, 1500)}\n{_tail(logs / 'dashboard.log', 1500)}\n"
                                 f"{_tail(logs / 'dashboard.err', 1500)}") from None
        for _ in range(workers):
            cluster.workers.append(start(len(cluster.workers) + 1))
        wait_alive(cluster, cluster.nodes, timeout_s)
        yield cluster
    finally:
        # Worker nodes first (their raylets would otherwise spend a while trying to reach a lost head).
        for node in reversed(started):
            _stop_node(node)
        shutil.rmtree(root, ignore_errors=True)


def _stop_node(node: RayNode, grace_s: float = 15.0) -> None:
    """SIGTERM to `ray start --block` (it stops its processes), then SIGKILL to whatever of the node's
    session is still running."""
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            node.proc.wait(grace_s)
    _kill_session(node.proc.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.proc.wait(5)


def _kill_session(sid: int) -> None:
    for pid in _session_pids(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    until(lambda: not _session_pids(sid), f"the processes of session {sid} to end", timeout=15, every=0.05)


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (field 6 of /proc/PID/stat), zombies left out."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return pids


def _worker_port_ranges(n: int) -> list[tuple[int, int]]:
    """``n`` disjoint ranges of ports for Ray's workers, each free to bind right now (as far as a probe
    of its ends can tell), at a random place of WORKER_PORTS so that two clusters rarely meet."""
    slots = list(range(WORKER_PORTS[0], WORKER_PORTS[1] - WORKER_PORTS_PER_NODE, WORKER_PORTS_PER_NODE))
    random.shuffle(slots)
    out: list[tuple[int, int]] = []
    for lo in slots:
        if len(out) == n:
            break
        hi = lo + WORKER_PORTS_PER_NODE - 1
        if _bindable(lo) and _bindable(hi):
            out.append((lo, hi))
    return out


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
        return True


def _answers(cluster: RayNodes, head: RayNode) -> bool:
    if head.proc.poll() is not None:
        raise RuntimeError(f"the Ray head exited with {head.proc.returncode}: {_tail(head.log)}")
    try:
        r = httpx.get(f"{cluster.dashboard}/api/version", timeout=2.0,
                      headers={"authorization": f"Bearer {cluster.token}"})
        if r.status_code in (401, 403):
            raise RuntimeError(f"the Ray head's dashboard refused this cluster's token: {r.status_code} {r.text}")
        return r.status_code == 200
    except httpx.HTTPError:
        return False


def _tail(log: Path, n: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"
