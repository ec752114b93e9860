"""The serving stack's CPU alone: `tandem serve` whose model answers at once, against a bare server.

    .venv/bin/python bench/serving_standin.py [--duration 8] [--repeats 3]

bench/serving_profile.py finds `stack_cpu_ms` by subtracting the model's CPU (2.9-3.2 ms a request) from
the server's, so a change of 0.02 ms in the stack hides in the model's run-to-run spread (±0.05 ms and more
on a busy minute). Here every model call is a stand-in that returns zeros of the outputs' shapes at once,
so all of the server's CPU is the stack's, and a change shows. Four servers, each driven at
concurrency 16 by bench/serving/loadgen.py with the OIP binary requests of bench/serving.py:

- `tandem`: `tandem serve`'s own code path (uvicorn with the guarded protocol, the app, auth, limits,
  metrics, the batcher and its threads) with the access log on, as `tandem serve` runs by default;
- `tandem_line_at_once`: the same with TANDEM_ACCESS_LOG_FLUSH_MS=0 (each access line written on its own);
- `tandem_no_access_log`: the same with TANDEM_ACCESS_LOG=0;
- `bare`: an asyncio protocol with httptools' parser (uvloop) that answers every request with a canned
  reply of the same size: what sockets and parsing alone cost, the floor under any Python server.

Two experiments answer "what would a hot-route server of our own buy?" (issue 21's option of a raw
protocol handler for `/v2/models/*/infer`), not run by default:

- `raw`: the infer route alone on asyncio + httptools (uvloop), calling the app's own services (auth and
  its cache, the rate limit, the pool, the data plane's batcher and statistics, the OIP codec, the request
  metrics and the access log) without uvicorn's ASGI cycle, Starlette or the middlewares, and without
  the edge's limits, error answers, pipelining or 100-continue: an upper bound on what such a server saves;
- `raw_no_access_log`: the same with TANDEM_ACCESS_LOG=0.

    .venv/bin/python bench/serving_standin.py --variants tandem,raw --out bench/results/serving_raw_standin.json
    .venv/bin/python bench/serving_standin.py --model real --variants tandem,raw --out bench/results/serving_raw_real.json

`--model real` keeps the bundle's model (ONNX Runtime) in place of the stand-in: requests/s then say how much
of the cores each stack leaves the model.

The stand-in is this script's (the model's ``Batcher`` gets it in place of ONNX Runtime, in the server
process only): nothing in Tandem can serve without a model. Server CPU per request is utime + stime of
every thread of the server (/proc) over the measured phase / answered requests; the servers run side by
side, loaded one at a time, round by round, and the median of --repeats rounds is kept. Writes bench/results/serving_standin.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from tandem import atomic

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "serving_standin.json"
BARE_BODY = 948  # bytes of the OIP binary answer Tandem gives for one photo of the serving bundle
VARIANTS = ("tandem", "tandem_line_at_once", "tandem_no_access_log", "bare")
EXPERIMENTS = ("raw", "raw_no_access_log")  # --variants raw,...: what a hot-route server would cost (_serve_raw)


def _stand_in_model() -> None:
    """Every Batcher made in this process gets a model that answers zeros at once (STANDIN_OUTPUTS unset: the
    real model runs)."""
    import numpy as np

    from tandem.server import batching

    if not os.environ.get("STANDIN_OUTPUTS"):
        return
    init = batching.Batcher.__init__
    outputs: dict[str, tuple[int, ...]] = json.loads(os.environ["STANDIN_OUTPUTS"])

    def stand_in(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = next(iter(feeds.values())).shape[0]
        return {name: np.zeros((rows, *shape), np.float32) for name, shape in outputs.items()}

    def with_stand_in(self: batching.Batcher, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        self._run = self._run_lone = stand_in

    batching.Batcher.__init__ = with_stand_in  # type: ignore[method-assign]


def _serve_tandem(port: int) -> None:
    from tandem.cli.serve import run_uvicorn
    from tandem.settings import get_settings

    _stand_in_model()
    run_uvicorn(get_settings(), "127.0.0.1", port, "warning")


def _serve_raw(port: int) -> None:
    """What a hot-route server of Tandem's own would cost at most: the infer route alone on asyncio + httptools,
    with the app's own services (auth with its cache, the rate limit, the pool, the data plane's batcher and
    statistics, the OIP codec, the request metrics and the access log), without uvicorn's ASGI cycle, Starlette
    and the middlewares. An experiment (no limits, no errors, no pipelining, no 100-continue): an upper bound."""
    import httptools
    import uvloop

    from tandem.protocol import oip as oip_codec
    from tandem.server import ratelimit
    from tandem.server.app import create_app
    from tandem.server.endpoint import Call
    from tandem.server.observe import _Ids, access_line, access_log, setup_access_log
    from tandem.settings import get_settings

    _stand_in_model()
    settings = get_settings()
    app = create_app(settings)
    if settings.access_log:
        setup_access_log()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with app.router.lifespan_context(app):
            sv = app.state.services
            metrics = sv.metrics
            children: dict[tuple[str, str, str], Any] = {}

            async def handle(proto: Raw, url: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
                t0 = time.perf_counter()
                client = proto.peer
                path = url.decode("latin-1")
                parts = path.split("/")  # /v2/models/NAME[/versions/V]/infer
                name, version = parts[3], (parts[5] if len(parts) == 7 else None)
                auth = headers.get(b"authorization")
                key = await sv.auth.authenticate(auth.decode("latin-1") if auth else None, "predict", client, False)
                rate, burst = settings.rate_for(key.scope, key.device_id is not None)
                await ratelimit.check(sv.limiter, key.key_id, key.rate_per_s or rate, key.burst or burst)
                model = await sv.plane.model(name, version, tails=True)
                hl = headers.get(b"inference-header-content-length")
                header_length = hl.decode("latin-1") if hl else None

                async def read(limit: int) -> bytes:
                    return body

                def decode(b: bytes) -> Any:
                    req = oip_codec.parse_infer_request(b, header_length, model.inputs, model.outputs,
                                                        model.int8_inputs)
                    return req.inputs, req

                result, req = await sv.plane.infer(model, read, decode)
                content, hdrs = oip_codec.encode_infer_response(
                    model.name, model.version, req.id, [(o, result[o.name]) for o in req.outputs])
                rid = proto.ids.next()
                head = [b"HTTP/1.1 200 OK\r\n"]
                for k, v in hdrs.items():
                    head.append(f"{k}: {v}\r\n".encode("latin-1"))
                head.append(b"content-length: %d\r\nx-request-id: %s\r\nx-content-type-options: nosniff\r\n"
                            b"referrer-policy: no-referrer\r\n\r\n" % (len(content), rid.encode()))
                proto.transport.write(b"".join(head) + content)
                seconds = time.perf_counter() - t0
                label = ("/v2/models/{name}/infer", model.name, str(model.version))
                c = children.get(label)
                if c is None:
                    c = children[label] = (metrics.requests.labels(*label, "200"), metrics.latency.labels(*label))
                c[0].inc()
                c[1].observe(seconds)
                if settings.access_log:  # a record a line: as `tandem serve` wrote them when this was measured
                    call = Call(label[0], model.name, str(model.version), key.key_id)
                    access_log.info(access_line(rid, client, "POST", path, call, 200, seconds, len(body),
                                                len(content), ""))

            ids = _Ids()

            tasks: set[asyncio.Task[None]] = set()

            async def answer(proto: Raw, url: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
                try:
                    await handle(proto, url, headers, body)
                except Exception as e:  # an experiment's error answer: the status and the reason, then close
                    text = repr(e).encode()
                    proto.transport.write(b"HTTP/1.1 500 Internal Server Error\r\nconnection: close\r\n"
                                          b"content-length: %d\r\n\r\n%s" % (len(text), text))
                    proto.transport.close()

            class Raw(asyncio.Protocol):
                transport: asyncio.Transport

                def connection_made(self, transport: asyncio.BaseTransport) -> None:
                    self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass
                    self.peer = transport.get_extra_info("peername")[0]
                    self.parser = httptools.HttpRequestParser(self)
                    self.ids = ids
                    self._reset()

                def _reset(self) -> None:
                    self.url = b""
                    self.headers: dict[bytes, bytes] = {}
                    self.body: list[bytes] = []

                def data_received(self, data: bytes) -> None:
                    self.parser.feed_data(data)

                def on_url(self, url: bytes) -> None:
                    self.url += url

                def on_header(self, name: bytes, value: bytes) -> None:
                    self.headers[name.lower()] = value

                def on_body(self, chunk: bytes) -> None:
                    self.body.append(chunk)

                def on_message_complete(self) -> None:
                    url, headers, body = self.url, self.headers, b"".join(self.body)
                    self._reset()
                    if url.startswith(b"/v2/health"):
                        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"ready\": true}")
                        return
                    task = loop.create_task(answer(self, url, headers, body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)

            server = await loop.create_server(Raw, "127.0.0.1", port)
            await server.serve_forever()

    uvloop.run(main())


def _serve_bare(port: int) -> None:
    import httptools
    import uvloop

    body = b"\0" * BARE_BODY
    reply = (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ninference-header-content-length: 200\r\n"
             b"content-length: " + str(len(body)).encode() + b"\r\nx-request-id: " + b"0" * 32 +
             b"\r\nx-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n\r\n" + body)

    class Bare(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_body(self, chunk: bytes) -> None:
            self.body.append(chunk)

        def on_message_complete(self) -> None:
            b"".join(self.body)  # as a server that reads the request would
            self.body = []
            self.transport.write(reply)  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Bare, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def _run(sb: Any, srv: Any, reqs: Path, args: argparse.Namespace) -> dict:
    """One loaded run of ``srv`` (bench/serving.py's Server): requests/s, errors and the server's CPU a request
    over the measured phase."""
    gen = subprocess.Popen([sys.executable, str(sb.APPS / "loadgen.py"), "--requests", str(reqs),
                            "--port", str(srv.port), "--concurrency", str(args.concurrency),
                            "--duration", str(args.duration), "--warmup", str(args.warmup)],
                           stdout=subprocess.PIPE, text=True)
    assert gen.stdout is not None
    snaps: dict[str, float] = {}
    result = None
    for raw in gen.stdout:
        line = raw.strip()
        if line in ("START", "END"):
            snaps[line] = sb.cpu_seconds([srv.proc.pid])  # the process's threads, ended ones too
        elif line.startswith("{"):
            result = json.loads(line)
    gen.wait(60)
    if result is None or len(snaps) != 2 or result["ok"] == 0:
        raise RuntimeError(f"the load generator failed against {srv.name}; see {srv.log}")
    return {"rps": round(result["rps"], 1), "errors": result["errors"],
            "server_cpu_ms_per_req": round((snaps["END"] - snaps["START"]) / result["ok"] * 1e3, 4)}


def _inproc_best(sb: Any, bundle: Any, images: Any) -> float:
    """The model alone at batch 8: images/s, the best of 1 and 2 ONNX Runtime threads (bench/serving.py's reference)."""
    path = bundle.model_path("fp32")
    return max(sb.inproc(path, images, threads, 8, 3.0)["bN_rps"] for threads in (1, 2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5, help="rounds: runs per server (the median is kept)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--model", choices=("standin", "real"), default="standin",
                   help="real: the bundle's model runs (requests/s then tell what the stack leaves the model)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--serve", choices=("tandem", "bare", "raw"), help=argparse.SUPPRESS)  # the server process itself
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        {"tandem": _serve_tandem, "bare": _serve_bare, "raw": _serve_raw}[args.serve](args.port)
        return

    spec = importlib.util.spec_from_file_location("serving_bench", HERE / "serving.py")
    assert spec is not None and spec.loader is not None
    sb = importlib.util.module_from_spec(spec)
    sys.modules["serving_bench"] = sb
    spec.loader.exec_module(sb)
    from rich.table import Table

    settings = argparse.Namespace(max_batch=8, max_delay_ms=2.0, ort_threads=1, swap_versions=1, workers=1)
    bundle_dir = sb.find_bundle(None)
    bundle = sb.Bundle.load(bundle_dir)
    images = sb.load_images(bundle, 64)
    home = sb.TandemHome(bundle_dir, settings)
    outputs = {o.name: list(o.shape[1:]) for o in bundle.manifest.outputs}
    binary = sb.make_targets(images, bundle.manifest.name, home.key)["tandem_binary"]
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS) - set(EXPERIMENTS))
    if unknown:
        p.error(f"--variants: no such server {', '.join(unknown)}; choose from {', '.join(VARIANTS + EXPERIMENTS)}")
    servers: dict[str, tuple[Any, Path]] = {}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    try:
        for variant in variants:
            port = sb.free_port()
            reqs = binary.write(port)  # the requests name the port (Host): one file a server
            reqs = reqs.rename(reqs.with_name(f"standin_{variant}.pkl"))
            env = {**home.env, "STANDIN_OUTPUTS": json.dumps(outputs),
                   "TANDEM_ACCESS_LOG": "0" if variant.endswith("_no_access_log") else "1"}
            if variant.endswith("_line_at_once"):
                env["TANDEM_ACCESS_LOG_FLUSH_MS"] = "0"
            serve = variant.removesuffix("_no_access_log").removesuffix("_line_at_once")
            if args.model == "real":
                env.pop("STANDIN_OUTPUTS")
            srv = sb.start(f"standin_{variant}", [sys.executable, __file__, "--serve", serve, "--port", str(port)],
                           env, port, sb.ROOT)
            servers[variant] = (srv, reqs)
            srv.wait_ready("/v2/health/ready" if serve != "bare" else "/", 120)
        inproc: list[float] = []
        if args.model == "real":  # the physical limit before and after: the machine's speed drifts by the hour
            inproc.append(_inproc_best(sb, bundle, images))
        # Round by round, every server once a round: a busy minute of the machine falls on all of them.
        for i in range(args.repeats):
            for variant in variants:
                srv, reqs = servers[variant]
                sb.console.print(f"round {i + 1} of {args.repeats}: {variant} …")
                runs[variant].append(_run(sb, srv, reqs, args))
        for srv, _ in servers.values():  # the model in process must not share the cores with idle servers' threads
            srv.stop()
        if args.model == "real":
            inproc.append(_inproc_best(sb, bundle, images))
    finally:
        for srv, _ in servers.values():
            srv.stop()
    reference = statistics.mean(inproc) if inproc else 0.0
    rows: dict[str, dict] = {}
    for variant, done in runs.items():
        cpu = [r["server_cpu_ms_per_req"] for r in done]
        rps = [r["rps"] for r in done]
        median = sorted(done, key=lambda r: r["server_cpu_ms_per_req"])[len(done) // 2]
        rows[variant] = {**median, "server_cpu_ms_per_req_runs": cpu, "spread_ms": round(max(cpu) - min(cpu), 4),
                         "rps_runs": rps, "rps_median": statistics.median(rps)}
        if reference:
            rows[variant]["of_inproc"] = round(statistics.median(rps) / reference, 3)

    model = "stand-in model" if args.model == "standin" else "the bundle's model"
    table = Table(title=f"server CPU a request, {model}, OIP binary, c{args.concurrency}")
    for col in ("server", "requests/s (median)", "of in process", "CPU ms / request (median)", "runs", "errors"):
        table.add_column(col)
    for name, r in rows.items():
        table.add_row(name, f"{r['rps_median']:.0f}", f"{r['of_inproc']:.2f}x" if reference else "—",
                      f"{r['server_cpu_ms_per_req']:.3f}",
                      ", ".join(f"{c:.3f}" for c in r["server_cpu_ms_per_req_runs"]), str(r["errors"]))
    sb.console.print(table)
    if reference:
        sb.console.print(f"in process (best of 1 and 2 threads, batch 8): {', '.join(f'{x:.0f}' for x in inproc)} "
                         "images/s before and after the servers")
    how = ("every model call answers zeros at once (a stand-in in the server process), so the server's CPU is the "
           "stack's" if args.model == "standin" else "the bundle's model runs (ONNX Runtime, 1 thread a call, 2 calls "
           "in flight); of_inproc: median requests/s over the model in process (best of 1 and 2 threads, batch 8), "
           "measured before and after the servers, their mean")
    doc = {"concurrency": args.concurrency, "duration_s": args.duration, "repeats": args.repeats, "model": args.model,
           "method": (f"{how}: utime + stime of the server's threads (/proc) over the measured phase / answered "
                      "requests, loadgen.py, OIP binary; bare: asyncio + httptools answering a canned reply; raw: "
                      "the infer route alone over the app's services (_serve_raw)"), "date": time.strftime("%Y-%m-%d"),
           **({"inproc_images_per_s": inproc} if inproc else {}),
           "servers": rows}
    out = Path(args.out)
    atomic.write_text(out, json.dumps(doc, indent=2) + "\n")
    sb.console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
