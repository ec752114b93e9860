"""Past one machine, measured on one: Ray Train and Ray Serve against Tandem's plain paths.

    make bench-scale          (or: .venv/bin/python bench/scale.py [--quick] [--device cuda])

(a) Training throughput (images/s) of the same run (LFW people with 40+ photos, stem stride 2,
    32-photo batches, seed 0, no validation) three ways, each a `tandem train` command as a user
    types it: the plain trainer, `--workers 1` and `--workers 2` (Ray Train on a local instance the
    command starts). ``train_ips`` is the steady rate: training images × epochs after the first,
    over those epochs' seconds (from history.json); the first epoch and Ray's start-up are in
    ``train_wall_s``, the whole command's time, and in ``train_ips_wall``.
(b) Serving throughput (answers/s) at concurrency 16 of the bundle exported from the 2-worker run:
    plain `tandem serve` (one uvicorn worker), `tandem serve --ray --replicas 1` and `--replicas 2`,
    driven by bench/serving/loadgen.py (closed loop, keep-alive, OIP v2 binary, one LFW photo per
    request, pre-encoded).

(c) ``--only multi_node`` (or ``--parts multi_node``): a real cluster of Ray nodes, each its own `ray start`
    process tree pinned to a core of its own (tandem.testing.ray_nodes: the head on core 0, a second
    node on core 1), the registry on PostgreSQL, artifacts and Ray Train's checkpoints in an S3 bucket
    (moto's server), rate limits in Redis. One node (the head alone, one core) against two:
    `tandem train --workers 1|2 --address HEAD` (``train_ips``), the 1-worker run's bundle served by
    `tandem serve --ray --replicas 1|2 --address HEAD` with one replica per node and HAProxy on the head
    (``serve_rps``), then the second node killed (SIGKILL to every process it runs) while 8 clients
    keep sending: ``failed_requests_on_node_kill`` and ``recovery_s`` (from the kill to the answer of
    the last failed request). The load generator and the kill clients are not pinned: they share both
    cores with the nodes, in both cases. PostgreSQL: TANDEM_BENCH_POSTGRES_URL (default the tests'
    postgresql+psycopg://postgres@127.0.0.1:5432/test, in a schema of its own, dropped after); Redis:
    TANDEM_BENCH_REDIS_URL (default redis://127.0.0.1:6379/0).

(d) ``--only managed_training``: the same training through Tandem's own training service (`tandem train
    --remote` → a Ray Job on a head started here that trains, exports and pushes) against the plain CLI doing
    the same (train, export, push): ``submit_to_first_epoch_s``, ``end_to_end_s``, ``overhead_vs_local_train``
    (target 0.15). bench/scale_managed.py says how.

(e) ``--only store``: the artifact store on a local folder against S3 (moto's server on loopback):
    ``push_mb_s`` and ``pull_mb_s`` of a --store-mb MiB object through the store's own put_file and read
    (sha256 checked; multipart for S3), and OTA device updates/s through one `tandem serve` worker with the
    registry on each (``ota_downloads_s``), for S3 also by presigned URLs (``ota_presigned_downloads_s``) and the
    check alone (bench/ota_direct.py's ways). Targets: S3 push and pull ≥ 50 MB/s, presigned ≥ 5× through the
    server. bench/scale_store.py says how.

Writes bench/results/scale.json (``train_ips`` = {local, ray1, ray2}, ``serve_rps`` = {plain, ray1,
ray2}, ``multi_node``, ``managed_training``, ``store``, and the detail of every cell) and prints a table;
the keys a run does not measure are kept from the file as it was (written whole, atomically). The machine
may be shared: every cell records the load average around it.

With --device cuda, (a) runs on the GPU (Ray workers reserve one GPU each) and the results name the
card; (b) is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import pickle
import platform
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import proc_cpu
from rich.console import Console
from rich.table import Table

from tandem import atomic
from tandem.testing.processes import free_port, stop, until
from tandem.testing.served import wait_ready

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work" / "scale"
TANDEM = Path(sys.executable).parent / "tandem"
LOADGEN = HERE / "serving" / "loadgen.py"
console = Console(width=None if sys.stdout.isatty() else 160)

TRAIN_MODES = {"local": [], "ray1": ["--workers", "1"], "ray2": ["--workers", "2"]}
SERVE_MODES = {"plain": [], "ray1": ["--ray", "--replicas", "1"], "ray2": ["--ray", "--replicas", "2"]}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def train_cell(mode: str, args: argparse.Namespace, env: dict[str, str], flags: list[str] | None = None) -> dict:
    out = WORK / f"run-{mode}"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(TANDEM), "train", "--data", "lfw", "--min-faces", str(args.min_faces), "--stem-stride", "2",
           "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--val-fraction", "0", "--seed", "0",
           "--device", args.device, "--out", str(out), "--json", *(TRAIN_MODES[mode] if flags is None else flags),
           *(["--subset", str(args.subset)] if args.subset else [])]
    if args.device == "cuda" and mode != "local":
        cmd += ["--gpus-per-worker", "1"]
    load0, t0 = load(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    history = json.loads((out / "history.json").read_text())
    steady = history[1:] or history
    images = summary["train_images"]
    return {
        "command": " ".join(cmd[1:]), "train_images": images, "epochs": len(history),
        "epoch_seconds": [round(h["seconds"], 3) for h in history],
        # Other work on a shared machine only ever slows an epoch down: the fastest is the least disturbed.
        "ips": round(images / min(h["seconds"] for h in steady), 1),
        "ips_mean": round(images * len(steady) / sum(h["seconds"] for h in steady), 1),
        "wall_s": round(wall, 1), "ips_wall": round(images * len(history) / wall, 1),
        "final_train_loss": round(history[-1]["train_loss"], 4), "load_before": load0, "load_after": load(),
    }


def photos(bundle: Path, n: int) -> np.ndarray:
    from tandem.bundle import Bundle
    from tandem.bundle.preprocess import decode_image, to_input
    from tandem.data.lfw import load_lfw
    from tandem.settings import get_settings

    b = Bundle.load(bundle)
    cat = load_lfw(get_settings().require_data_home(), min_faces=20)
    picks = cat.records[:: max(1, len(cat.records) // n)][:n]
    spec = b.manifest.preprocessing.model_copy(update={"crop": cat.crop})
    return np.stack([to_input(decode_image(r.path), spec) for r in picks])


def requests_file(images: np.ndarray, port: int, key: str, model: str) -> Path:
    reqs = []
    for img in images:
        raw = np.ascontiguousarray(img, np.uint8).tobytes()
        head = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, *img.shape],
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}},
                                       {"name": "embedding", "parameters": {"binary_data": True}}]},
                          separators=(",", ":")).encode()
        body = head + raw
        lines = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: 127.0.0.1:{port}",
                 "Content-Type: application/octet-stream", f"Content-Length: {len(body)}",
                 f"Inference-Header-Content-Length: {len(head)}", f"Authorization: Bearer {key}"]
        reqs.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    path = WORK / f"requests-{port}.pkl"
    with open(path, "wb") as f:
        pickle.dump(reqs, f)
    return path


def serve_cell(mode: str, args: argparse.Namespace, env: dict[str, str], images: np.ndarray, key: str,
               model: str, flags: list[str] | None = None, then: Callable[[str], Any] | None = None,
               before: Callable[[], Any] | None = None, profile: bool = False) -> dict:
    """``before()``: run once the server answers, before the load; ``then(url)``: run after the load, while the
    server still runs; its result is the cell's "then". ``profile``: py-spy records the process that runs the
    app (the server; with --ray, the replica) through the load (see profile_start)."""
    port = free_port()
    cmd = [str(TANDEM), "serve", "--port", str(port), "--log-level", "warning",
           *(SERVE_MODES[mode] if flags is None else flags)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    after = None
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, timeout_s=300)
        if before is not None:
            before()
        ready_s = time.perf_counter() - t0
        spies = profile_start(mode, proc.pid, args.duration + 4) if profile else None
        load0 = load()
        # Popen, not run: the CPU snapshots are taken at the load generator's START and END (the measured
        # phase, with every process, the load generator included, still alive).
        lg = subprocess.Popen([sys.executable, str(LOADGEN), "--requests", str(requests_file(images, port, key, model)),
                               "--port", str(port), "--concurrency", str(args.concurrency), "--duration",
                               str(args.duration), "--warmup", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        snaps: dict[str, tuple[float, dict]] = {}
        result = None
        assert lg.stdout is not None
        for raw in lg.stdout:
            line = raw.strip()
            if line in ("START", "END"):
                snaps[line] = (time.perf_counter(), proc_cpu.snapshot())
            elif line.startswith("{"):
                result = json.loads(line)
        lg.wait(60)
        if lg.returncode != 0 or result is None or len(snaps) != 2:
            raise SystemExit(f"loadgen failed: {lg.stderr.read()[-2000:] if lg.stderr else ''}")
        measured_s = snaps["END"][0] - snaps["START"][0]
        cpu = proc_cpu.by_group(snaps["START"][1], snaps["END"][1], measured_s, result["ok"])
        cpu_top = proc_cpu.top(snaps["START"][1], snaps["END"][1], measured_s)
        profiled = profile_end(spies, cpu) if spies is not None else None
        load1 = load()
        if then is not None:
            after = then(f"http://127.0.0.1:{port}")
    finally:
        stop(proc, grace_s=60)
    cell = {"command": " ".join(cmd[1:]), "ready_s": round(ready_s, 1), "rps": result["rps"],
            "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "errors": result["errors"],
            "statuses": result["statuses"], "client_cpu_share": result.get("client_cpu_share"),
            "load_before": load0, "load_after": load1, "cpu": cpu, "cpu_top": cpu_top}
    if profiled is not None:
        cell["profile"] = profiled
    return {**cell, "then": after} if then is not None else cell


def profile_start(mode: str, server_pid: int, seconds: float) -> tuple[str, list[subprocess.Popen], Path, Path]:
    """py-spy (bench/serving_profile.py's record) on the process that runs the app (plain: `tandem serve` itself,
    one worker; --ray: the replica, found by its process title), every thread at 200 Hz: a flame graph
    (bench/results/scale_flame_MODE.svg) and raw stacks, bucketed by serving_profile's categories (a "Ray Serve
    (replica)" one among them)."""
    import serving_profile  # bench/, beside this script

    pid = server_pid
    if mode != "plain":
        replicas = [p for p, (d, _) in proc_cpu.snapshot().items() if proc_cpu.group_of(d) == "replica"]
        if len(replicas) != 1:
            raise SystemExit(f"--profile needs one replica to record, found {len(replicas)}")
        pid = replicas[0]
    svg, raw = RESULTS / f"scale_flame_{mode}.svg", WORK / "profile" / f"{mode}.raw.txt"
    return mode, serving_profile.record(pid, seconds, 200, svg, raw), svg, raw


def profile_end(spies: tuple[str, list[subprocess.Popen], Path, Path], cpu: dict) -> dict:
    import serving_profile  # bench/, beside this script

    mode, procs, svg, raw = spies
    serving_profile.finish(procs, svg)
    summary = serving_profile.summarise(raw)
    app_ms = cpu.get("tandem serve" if mode == "plain" else "replica", {}).get("ms_per_request", 0.0)
    return {"flame_graph": str(svg.relative_to(HERE.parent)), "samples": summary["samples"],
            "share": summary["share"],
            # Samples are taken of threads on a CPU: a category's share of them is its share of the process's CPU.
            "ms_per_request": {c: round(v * app_ms, 3) for c, v in summary["share"].items()}}


# --- (c) several Ray nodes ----------------------------------------------------------------------------
REPLICA = "ServeReplica:tandem:TandemServer"
KILL_CLIENTS = 8


@contextlib.contextmanager
def shared_state() -> Iterator[dict[str, str]]:
    """What every node shares, as TANDEM_* variables: the registry in a PostgreSQL schema of its own, artifacts
    in a bucket of moto's S3 server (and Ray Train's checkpoints under another prefix of it), rate limits in
    Redis. Dropped and stopped after."""
    import redis
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from tandem.testing.s3 import s3_server

    pg = os.environ.get("TANDEM_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    redis_url = os.environ.get("TANDEM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        raise SystemExit(f"multi_node needs Redis at {redis_url} (TANDEM_BENCH_REDIS_URL): {e}") from None
    schema = f"bench_{secrets.token_hex(4)}"
    admin = create_engine(pg, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as e:
        raise SystemExit(f"multi_node needs PostgreSQL at {pg} (TANDEM_BENCH_POSTGRES_URL): {e.orig}") from None
    url = make_url(pg).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        with s3_server() as s3:
            bucket = s3.new_bucket("scale")
            yield {"TANDEM_DATABASE_URL": url, "TANDEM_REDIS_URL": redis_url, **s3.env(bucket, "objects"),
                   "TANDEM_RAY_STORAGE": f"s3://{bucket}/ray-train"}
    finally:
        with admin.connect() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@contextlib.contextmanager
def cluster(nodes: int, root: Path) -> Iterator[Any]:
    """A head (core 0) and ``nodes`` - 1 more nodes (cores 1, …), one CPU each, each with its own Tandem home
    and HAProxy files (tandem.testing.ray_nodes)."""
    from tandem.server.ray_serve import haproxy_env
    from tandem.settings import RaySettings
    from tandem.testing.ray_nodes import ray_nodes

    token = secrets.token_hex(3)
    bases: list[Path] = []

    def node_env(name: str) -> dict[str, str]:
        home = root / f"home-{name}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        bases.append(Path("/tmp") / f"thap-{token}-{name}")
        return {"TANDEM_HOME": str(home), **haproxy_env(RaySettings(), drain_s=1.0, base=bases[-1])}

    try:
        with ray_nodes(workers=nodes - 1, node_env=node_env) as c:
            if any(n.core is None for n in c.nodes):
                raise SystemExit(f"multi_node pins each node to a core of its own: {nodes} node(s) need {nodes} "
                                 f"cores (and taskset), this process may use {len(os.sched_getaffinity(0))}")
            yield c
    finally:
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)


def kill_under_load(nodes: Any, url: str, request: tuple[str, bytes, dict[str, str]], settle_s: float = 2.0) -> dict:
    """KILL_CLIENTS clients in a closed loop; the last node is killed after 3 s; they go on until Ray has
    declared its replica dead (its node missed its health checks) and Serve has updated HAProxy, and
    ``settle_s`` more."""
    import httpx

    log: list[tuple[float, float, int]] = []
    halt = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, headers=request[2], timeout=30) as c:
            while not halt.is_set():
                sent = time.monotonic()
                try:
                    status = c.post(request[0], content=request[1]).status_code
                except httpx.TransportError:
                    status = 0
                log.append((sent, time.monotonic(), status))

    threads = [threading.Thread(target=client) for _ in range(KILL_CLIENTS)]
    for t in threads:
        t.start()
    try:
        time.sleep(3.0)
        victim = nodes.workers[-1]
        killed_at = nodes.kill(victim)
        until(lambda: nodes.placement(REPLICA).get(victim.name, 0) == 0, f"Ray to declare {victim.name}'s replica dead",
              timeout=120, every=0.25)
        declared = time.monotonic() - killed_at
        time.sleep(settle_s)
    finally:
        halt.set()
        for t in threads:
            t.join(30)
    failed = [(round(sent - killed_at, 3), round(done - killed_at, 3), st) for sent, done, st in log if st != 200]
    after = [st for sent, _, st in log if sent >= killed_at]
    return {"requests": len(log), "requests_after_kill": len(after), "failed": len(failed),
            "failed_fraction": round(len(failed) / max(1, len(log)), 5), "failures": failed[:50],
            "recovery_s": round(max((done for _, done, _ in failed), default=0.0), 3),
            "replica_declared_dead_s": round(declared, 2), "clients": KILL_CLIENTS}


def multi_node(args: argparse.Namespace, env: dict[str, str]) -> dict:
    """(c): one node against two, for training and serving; a node lost under load."""
    root = WORK / "multi"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    cells: dict[str, dict] = {}
    with shared_state() as shared:
        common = {**env, **shared, "TANDEM_RAY_PROXY_LOCATION": "HeadOnly", "TANDEM_RAY_MAX_REPLICAS_PER_NODE": "1",
                  "TANDEM_RAY_REPLICA_CPUS": "1", "TANDEM_HOME": str(root / "home-driver")}
        bundle, model, key, images = None, "", "", np.empty(0)
        for n in (1, 2):
            with cluster(n, root / f"nodes-{n}") as nodes:
                run_env = {**common, **nodes.client_env}
                address = ["--address", nodes.address]
                train_rounds = []
                for r in range(args.rounds):
                    console.print(f"[bold]multi_node[/] training, {n} node(s), --workers {n} (round {r + 1}/{args.rounds})…")
                    train_rounds.append(train_cell(f"nodes{n}", args, run_env, ["--workers", str(n), *address]))
                    console.print(f"  {train_rounds[-1]['ips']} images/s steady, {train_rounds[-1]['wall_s']} s in all")
                best = max(train_rounds, key=lambda c: c["ips"])
                cells[f"train_{n}"] = {**best, "rounds": [c["ips"] for c in train_rounds],
                                       "placement": nodes.placement("RayTrainWorker", state=None)}
                if bundle is None:  # the bundle of the 1-node run, pushed to the shared registry once
                    bundle = root / "bundle"
                    subprocess.run([str(TANDEM), "export", str(WORK / "run-nodes1"), "--out", str(bundle), "--formats",
                                    "onnx"], env=run_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    from tandem.bundle import Bundle

                    model = Bundle.load(bundle).manifest.name
                    subprocess.run([str(TANDEM), "push", str(bundle)], env=run_env, check=True, stdout=subprocess.DEVNULL)
                    key = json.loads(subprocess.run([str(TANDEM), "keys", "create", "--scope", "predict", "--json"],
                                                    env=run_env, check=True, capture_output=True, text=True).stdout)["key"]
                    images = photos(bundle, 64)
                # --host 0.0.0.0: replicas listen where the ingress does; HAProxy reaches node1's at its address.
                flags = ["--ray", "--replicas", str(n), *address, "--host", "0.0.0.0"]
                serve_rounds = []
                for r in range(args.rounds):
                    last = n == 2 and r == args.rounds - 1
                    console.print(f"[bold]multi_node[/] serving, {n} node(s), --replicas {n} (round {r + 1}/{args.rounds})"
                                  f"{', then node1 killed under load' if last else ''}…")

                    then = functools.partial(check_then_kill, nodes=nodes,
                                             kill=kill_request(images[0], key, model) if last else None)
                    cell = serve_cell(f"nodes{n}", args, run_env, images, key, model, flags, then,
                                      functools.partial(all_replicas_serving, nodes, n))
                    serve_rounds.append(cell)
                    console.print(f"  {cell['rps']} answers/s, p99 {cell['p99_ms']} ms")
                best = max(serve_rounds, key=lambda c: c["rps"])
                cells[f"serve_{n}"] = {**best, "rounds": [c["rps"] for c in serve_rounds]}
                if n == 2:
                    cells["node_kill"] = serve_rounds[-1]["then"]["kill"]
    kill = cells["node_kill"]
    t1, t2 = cells["train_1"]["ips"], cells["train_2"]["ips"]
    s1, s2 = cells["serve_1"]["rps"], cells["serve_2"]["rps"]
    return {
        "serve_rps": {"1": s1, "2": s2}, "serve_ratio_2_vs_1": round(s2 / s1, 3),
        "failed_requests_on_node_kill": kill["failed"], "requests_during_node_kill": kill["requests"],
        "recovery_s": kill["recovery_s"],
        "train_ips": {"1": t1, "2": t2}, "train_ratio_2_vs_1": round(t2 / t1, 3),
        # Amdahl with two points (what `tandem advise --training` reads): s = 2 / S2 - 1.
        "train_serial_fraction": round(min(1.0, max(0.0, 2.0 / (t2 / t1) - 1.0)), 4),
        "cores": {"head": 0, "node1": 1, "load generator and kill clients": "not pinned (both cores)",
                  "head also runs": "Ray's GCS, dashboard and Serve controller, and HAProxy (the ingress)"},
        "shared_state": "registry PostgreSQL, artifacts and Ray Train checkpoints S3 (moto), rate limits Redis",
        "cells": cells,
    }


def all_replicas_serving(nodes: Any, n: int) -> None:
    """Until Serve runs ``n`` replicas and HAProxy sends to all of them (it hears of a new one in its own time)."""
    until(lambda: nodes.serve_replicas("tandem", "TandemServer").get("RUNNING") == n, f"{n} replicas running", 300, 0.5)
    until(lambda: len(nodes.haproxy_replicas()) == n, f"HAProxy to send to {n} replicas", 120, 0.25)


def check_then_kill(url: str, nodes: Any, kill: tuple[str, bytes, dict[str, str]] | None) -> dict:
    """After a serve cell's load: one replica on each node (or the cell is void), and with ``kill`` the last
    node killed under load."""
    placed = nodes.placement(REPLICA)
    if placed != {node.name: 1 for node in nodes.nodes}:
        raise SystemExit(f"one replica on each of {len(nodes.nodes)} node(s) expected; Ray placed them so: {placed}")
    return {"placement": placed, **({"kill": kill_under_load(nodes, url, kill)} if kill else {})}


def kill_request(image: np.ndarray, key: str, model: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of an OIP v2 binary request for one photo, as the load generator sends."""
    raw = np.ascontiguousarray(image, np.uint8).tobytes()
    head = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, *image.shape],
                                   "parameters": {"binary_data_size": len(raw)}}]}, separators=(",", ":")).encode()
    return (f"/v2/models/{model}/infer", head + raw,
            {"authorization": f"Bearer {key}", "content-type": "application/octet-stream",
             "inference-header-content-length": str(len(head))})


def write_results(path: Path, result: dict) -> dict:
    """``result`` over what ``path`` held (keys this run did not measure stay), written atomically."""
    old: dict = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path} is not JSON ({e}); move it away and run again") from None
    merged = {**old, **result}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(merged, indent=2) + "\n")
    return merged


def store_table(st: dict, out: Path) -> None:
    """Part (e)'s figures, and the targets."""
    cells = st["cells"]
    table = Table(title=f"bench/scale store on {st['machine']['cpus']} CPUs ({st['object_bytes'] / 2**20:g} MiB "
                        f"object, OTA model {st['ota_model_bytes'] / 2**20:g} MiB, {st['concurrency']} clients; MB = 10^6 B)")
    for col in ("store", "push MB/s", "pull MB/s", "bundle push MB/s", "bundle pull MB/s", "OTA via server /s",
                "OTA presigned /s", "OTA checks alone /s"):
        table.add_column(col, justify="left" if col == "store" else "right")
    for b, label in (("local", "local folder"), ("s3", "S3 (moto, loopback)")):
        fig = st[b]
        table.add_row(label, f"{fig['push_mb_s']}", f"{fig['pull_mb_s']}", f"{cells[f'{b}_bundle']['push_mb_s']}",
                      f"{cells[f'{b}_bundle']['pull_mb_s']}", f"{fig['ota_downloads_s']}",
                      f"{fig.get('ota_presigned_downloads_s', '—')}", f"{fig.get('presigned_server_side_s', '—')}")
    console.print(table)
    s3, target = st["s3"], st["targets"]

    def mark(ok: bool) -> str:
        return "[green]met[/]" if ok else "[red]not met[/]"

    console.print(f"S3 push {s3['push_mb_s']} / pull {s3['pull_mb_s']} MB/s (target ≥ {target['s3_push_mb_s']:g}: "
                  f"{mark(st['meets']['s3_push_mb_s'] and st['meets']['s3_pull_mb_s'])}); presigned OTA ÷ through the "
                  f"server: {s3['ratio_server_side']}× server side, {s3['ratio_presigned_end_to_end']}× end to end "
                  f"with moto serving the bytes (target ≥ {target['ratio_presigned_vs_server']:g}×: server side "
                  f"{mark(st['meets']['ratio_server_side'])})  →  {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer epochs and a shorter load: a smoke run")
    p.add_argument("--profile", action="store_true",
                   help="serve part: one more cell each of plain and ray1 with py-spy recording the app's process "
                        "(flame graphs bench/results/scale_flame_*.svg; where Ray Serve's overhead sits)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--min-faces", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--subset", type=float, help="train on this fraction of the photos (a smoke run)")
    p.add_argument("--rounds", type=int, default=2,
                   help="run the three trainings (and servers) this many times, interleaved, keeping each one's best")
    p.add_argument("--bundle", type=Path, help="serve this bundle (default: the one exported from the 2-worker run)")
    p.add_argument("--parts", default="train,serve",
                   help="train, serve, multi_node, managed_training, store, comma-separated (serve alone needs "
                   "--bundle)")
    p.add_argument("--only", choices=["multi_node", "managed_training", "store"],
                   help="this part alone (the same as --parts PART)")
    p.add_argument("--managed-epochs", type=int, default=5, help="managed_training: epochs of the compared training")
    p.add_argument("--store-mb", type=float, default=64.0,
                   help="store: MiB of the object pushed and pulled (and of the model of the pushed bundle)")
    p.add_argument("--ota-model-mb", type=float, default=3.6,
                   help="store: MiB of the model file each OTA update downloads (the celebmatch bundle's: 3.6)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds of load per server")
    p.add_argument("--out", type=Path, default=RESULTS / "scale.json",
                   help="the results file (merged into; a smoke run: a copy, e.g. /tmp/scale.json)")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.duration = 2, 6.0
    WORK.mkdir(parents=True, exist_ok=True)
    home = WORK / "home"
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "TANDEM_HOME": str(home), "TANDEM_ACCESS_LOG": "0", "COLUMNS": "160",
           # The bench measures throughput, not the per-key limits.
           "TANDEM_RATE_LIMIT_PER_S": "1000000", "TANDEM_RATE_LIMIT_BURST": "1000000"}
    for var in ("TANDEM_DATABASE_URL", "TANDEM_REDIS_URL", "TANDEM_RAY_ADDRESS"):
        env.pop(var, None)

    parts = {args.only} if args.only else set(args.parts.split(","))
    if unknown := parts - {"train", "serve", "multi_node", "managed_training", "store"}:
        raise SystemExit(f"--parts: no part {', '.join(sorted(unknown))} (train, serve, multi_node, managed_training, "
                         "store)")
    if args.device == "cuda":
        parts -= {"serve", "multi_node", "managed_training", "store"}
    if "serve" in parts and "train" not in parts and args.bundle is None:
        raise SystemExit("--parts serve needs --bundle (without training there is no run to export)")
    machine = {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
               "python": platform.python_version()}
    result: dict = {"machine": machine, "device": args.device} if parts & {"train", "serve"} else {}
    if args.device == "cuda":
        import torch

        result["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    train: dict[str, dict] = {}
    if "train" in parts:
        rounds: dict[str, list[dict]] = {m: [] for m in TRAIN_MODES}
        for r in range(args.rounds):
            for mode in TRAIN_MODES:
                console.print(f"[bold]training[/] {mode} (round {r + 1}/{args.rounds})…")
                cell = train_cell(mode, args, env)
                rounds[mode].append(cell)
                console.print(f"  {cell['ips']} images/s steady (mean {cell['ips_mean']}), {cell['wall_s']} s in all")
        for mode, cells in rounds.items():
            train[mode] = {**max(cells, key=lambda c: c["ips"]), "rounds": [c["ips"] for c in cells]}
        result["train"] = train
        result["train_ips"] = {m: c["ips"] for m, c in train.items()}
        result["train_wall_s"] = {m: c["wall_s"] for m, c in train.items()}
        result["train_ratio_ray1_vs_local"] = round(train["ray1"]["ips"] / train["local"]["ips"], 3)

    serve: dict[str, dict] = {}
    if "serve" in parts:
        bundle = args.bundle
        if bundle is None:  # the bundle of the 2-worker run: nothing downstream knows how it was trained
            bundle = WORK / "bundle"
            shutil.rmtree(bundle, ignore_errors=True)
            subprocess.run([str(TANDEM), "export", str(WORK / "run-ray2"), "--out", str(bundle), "--formats", "onnx"],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from tandem.bundle import Bundle

        model = Bundle.load(bundle).manifest.name
        subprocess.run([str(TANDEM), "push", str(bundle)], env=env, check=True, stdout=subprocess.DEVNULL)
        key = json.loads(subprocess.run([str(TANDEM), "keys", "create", "--scope", "predict", "--json"], env=env,
                                        check=True, capture_output=True, text=True).stdout)["key"]
        images = photos(bundle, 64)
        tries: dict[str, list[dict]] = {m: [] for m in SERVE_MODES}
        for r in range(args.rounds):
            for mode in SERVE_MODES:
                console.print(f"[bold]serving[/] {mode} (round {r + 1}/{args.rounds})…")
                cell = serve_cell(mode, args, env, images, key, model)
                tries[mode].append(cell)
                console.print(f"  {cell['rps']} answers/s, p99 {cell['p99_ms']} ms")
        for mode, cells in tries.items():
            serve[mode] = {**max(cells, key=lambda c: c["rps"]), "rounds": [c["rps"] for c in cells]}
        if args.profile:  # apart from the measured rounds: py-spy takes CPU the server would have had
            for mode in ("plain", "ray1"):
                console.print(f"[bold]profiling[/] {mode}…")
                serve[mode]["profile"] = serve_cell(mode, args, env, images, key, model, profile=True)["profile"]
        result["serve_bundle"] = {"path": str(bundle), "model": model}
        result["serve"] = serve
        result["serve_rps"] = {m: c["rps"] for m, c in serve.items()}
        result["serve_ratio_ray1_vs_plain"] = round(serve["ray1"]["rps"] / serve["plain"]["rps"], 3)

    if "multi_node" in parts:
        result["multi_node"] = {"machine": machine, "epochs": args.epochs, "concurrency": args.concurrency,
                                "duration_s": args.duration, **multi_node(args, env)}
    if "managed_training" in parts:
        from scale_managed import managed_training  # bench/, beside this script

        result["managed_training"] = {"machine": machine, **managed_training(
            WORK / "managed", args.min_faces, 2 if args.quick else args.managed_epochs, args.batch_size, args.rounds,
            env, console.print, args.subset)}
    if "store" in parts:
        from scale_store import TRANSFERS, store  # bench/, beside this script

        # --quick: a smoke run (multipart still: 3 parts of 8 MiB), a few seconds a cell.
        result["store"] = {"machine": machine, **store(
            WORK / "store", store_mib=20.0 if args.quick else args.store_mb,
            ota_model_mib=1.0 if args.quick else args.ota_model_mb, rounds=1 if args.quick else args.rounds,
            transfers=2 if args.quick else TRANSFERS, concurrency=4 if args.quick else args.concurrency,
            duration=2.0 if args.quick else args.duration, env=env, say=console.print), "quick": args.quick}
    write_results(args.out, result)
    if "store" in parts:
        store_table(result["store"], args.out)
        if not parts & {"train", "serve", "multi_node", "managed_training"}:
            return
    if "managed_training" in parts:
        mt = result["managed_training"]
        console.print(f"managed_training: first epoch {mt['submit_to_first_epoch_s']} s after submitting, pushed after "
                      f"{mt['end_to_end_s']} s; the same locally (train, export, push) {mt['local_pipeline_s']} s: "
                      f"overhead {mt['overhead_vs_local_train']:.1%} (target ≤ {mt['target']:.0%})  →  {args.out}")
        if not parts & {"train", "serve", "multi_node"}:
            return
    if "multi_node" in parts:
        m = result["multi_node"]
        console.print(f"multi_node: serving {m['serve_rps']['1']} → {m['serve_rps']['2']} answers/s on 1 → 2 nodes "
                      f"({m['serve_ratio_2_vs_1']}×); training {m['train_ips']['1']} → {m['train_ips']['2']} images/s "
                      f"({m['train_ratio_2_vs_1']}×); node killed: {m['failed_requests_on_node_kill']} of "
                      f"{m['requests_during_node_kill']} requests failed, all answered again after "
                      f"{m['recovery_s']} s  →  {args.out}")
        if not parts & {"train", "serve"}:
            return
    table = Table(title=f"bench/scale on {result['machine']['cpus']} CPUs ({args.device}"
                        f"{', ' + result['gpu'] if result.get('gpu') else ''})")
    for col in ("path", "train images/s (steady)", "train wall s", f"serve answers/s @{args.concurrency}", "p99 ms",
                "errors"):
        table.add_column(col, justify="right" if col != "path" else "left")
    for (tm, sm, label) in (("local", "plain", "plain (tandem train / tandem serve)"),
                            ("ray1", "ray1", "Ray, 1 worker / 1 replica"), ("ray2", "ray2", "Ray, 2 workers / 2 replicas")):
        t, sv = train.get(tm, {}), serve.get(sm, {})
        table.add_row(label, f"{t.get('ips', '—')}", f"{t.get('wall_s', '—')}", f"{sv.get('rps', '—')}",
                      f"{sv.get('p99_ms', '—')}", f"{sv.get('errors', '—')}")
    console.print(table)
    ratios = [f"{what} {result[k]}" for what, k in (("training", "train_ratio_ray1_vs_local"),
                                                    ("serving", "serve_ratio_ray1_vs_plain")) if k in result]
    console.print(f"Ray ÷ plain with one worker/replica: {', '.join(ratios)}  →  {args.out}")
    if any("cpu" in serve.get(m, {}) for m in SERVE_MODES):
        cpu = Table(title="where the CPU went under the serving load: ms per answered request (cores busy)")
        cpu.add_column("process")
        for m in SERVE_MODES:
            cpu.add_column(m, justify="right")
        groups = dict.fromkeys(g for m in SERVE_MODES for g in serve.get(m, {}).get("cpu", {}))
        for g in groups:
            cells = [serve.get(m, {}).get("cpu", {}).get(g) for m in SERVE_MODES]
            cpu.add_row(g, *(f"{c['ms_per_request']} ({c['cores']})" if c else "—" for c in cells))
        console.print(cpu)


if __name__ == "__main__":
    main()
