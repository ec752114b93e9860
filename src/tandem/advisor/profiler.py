"""Profile a bundle on this machine: whole-model latency, and for every candidate cut the time of its
head and of its tail, the bytes that cross, and the device memory the head needs.

Per-cut times are measured by running each cut's actual head and tail models (what a split would
run), not by adding up per-node profiler entries: ONNX Runtime fuses nodes, so per-node times do
not add up to what a part costs, and a head and a tail each lose the fusions across the cut. The
per-layer latency in the report is the difference between consecutive heads' times.

Everything is at batch 1 (one photo per request): the median of ``repeats`` runs after ``warmup``,
timed in rounds over all the parts at once (see :func:`interleaved_ms`), so that a burst of load
from another process on a shared machine does not skew the parts it happened to fall on.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from tandem.advisor.profile import CutProfile, ModelProfile
from tandem.bundle import Bundle
from tandem.bundle.runtime import load_session, session_options
from tandem.errors import InvalidRequest, ModelError
from tandem.export.split import GraphCuts, load_cuts
from tandem.protocol import activations

Progress = Callable[[int, int, str], None]
# Idle time before each run of the "after idle" measurement: longer than a core takes to clock down
# and another process to evict the model from the caches (on this machine a run after 10 ms idle
# already took 1.7x a back-to-back run; after 50 ms or 300 ms the same).
IDLE_GAP_S = 0.05


def median_ms(run: Callable[[], object], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def interleaved_ms(runs: list[Callable[[], object]], repeats: int, warmup: int) -> list[float]:
    """Median ms of each call, timed in rounds (each call once per round) so that a burst of load
    from another process slows every part alike instead of the few timed during it."""
    for run in runs:
        for _ in range(warmup):
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, ts in zip(runs, times, strict=True):
            t0 = time.perf_counter()
            run()
            ts.append((time.perf_counter() - t0) * 1000.0)
    return [float(statistics.median(ts)) for ts in times]


def idle_ms(run: Callable[[], object], repeats: int, gap_s: float = IDLE_GAP_S) -> float:
    """Median ms of ``run`` when each run follows ``gap_s`` of idling, as a request now and then does."""
    run()
    times = []
    for _ in range(repeats):
        time.sleep(gap_s)
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(statistics.median(times))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: no cheap current-RSS reading
        return 0


def _session(source: Path | bytes, threads: int) -> ort.InferenceSession:
    so = session_options(threads)
    # Idle thread pools spinning on the same cores slowed the other live sessions 2-3x here.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(source if isinstance(source, bytes) else str(source), so,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own unexported exception types
        raise ModelError(f"ONNX Runtime cannot load a part of the model for profiling ({e})") from e


def _call(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], object]:
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def activation_bytes(cuts: GraphCuts, pixels: np.ndarray, threads: int | None) -> dict[str, int]:
    """Each activation's bytes, by running the model once with every activation as an output."""
    model = onnx.ModelProto()
    model.CopyFrom(cuts.model)
    have = {o.name for o in model.graph.output}
    names = cuts.activations()
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names
                              if n not in have and n not in {i.name for i in cuts.inputs})
    sess = load_session(model.SerializeToString(), threads)
    outs = sess.run(None, {sess.get_inputs()[0].name: pixels})
    sizes = {o.name: int(v.nbytes) for o, v in zip(sess.get_outputs(), outs, strict=True)}
    sizes.update({i.name: int(pixels.nbytes) for i in cuts.inputs})
    return sizes


def profile_bundle(path: Path | str, *, repeats: int = 20, warmup: int = 3, batch: int = 8,
                   threads: int = 1, progress: Progress | None = None,
                   size: tuple[int, int] | None = None, idle: bool = True) -> ModelProfile:
    """Measure the bundle at ``path`` on this machine (see the module's docstring).

    ``size``: (height, width) of the pixels to time a model of any size at (a video's frames; see
    tandem.advisor.frames.model_size); default: the size the bundle's preprocessing makes. ``idle``:
    also time runs after idling (``whole_idle_ms``, 2 s or more); a video's frames come back to back.

    ``threads``: ONNX Runtime intra-op threads. One by default: Tandem's server runs each model call
    on one thread, one thread's times are steady on a busy machine (two threads' varied 2-3x with
    another process on the second core), and a device's own parallelism is part of its speed factor.
    """
    if repeats < 1 or warmup < 0 or batch < 1 or threads < 1:
        raise InvalidRequest("repeats, batch and threads must be ≥ 1, warmup ≥ 0")
    bundle = Bundle.load(path)
    m = bundle.manifest
    fp32 = bundle.model_path("fp32")
    cuts = load_cuts(fp32)
    candidates = cuts.cuts()
    total = len(candidates) + 4
    report = progress or (lambda done, total, what: None)
    height, width = size or (m.preprocessing.height, m.preprocessing.width)
    pixels = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)

    report(0, total, "loading the whole model")
    rss0 = _rss_bytes()
    whole = _session(fp32, threads)
    outs = whole.run(None, {whole.get_inputs()[0].name: pixels})
    rss = max(0, _rss_bytes() - rss0)
    images_per_s = batch * 1000.0 / median_ms(_call(whole, np.repeat(pixels, batch, axis=0)), max(3, repeats // 4), 1)
    runs = [_call(whole, pixels)]
    int8_bytes = None
    if "int8" in m.models:
        int8_path = bundle.model_path("int8")
        runs.append(_call(_session(int8_path, threads), pixels))
        int8_bytes = int8_path.stat().st_size

    report(1, total, "tensor sizes")
    sizes = activation_bytes(cuts, pixels, threads)
    live = cuts.live_bytes(sizes)
    parts = []
    for i, cut in enumerate(candidates):
        report(2 + i, total, f"loading cut k={cut.k} ({cut.op})")
        head_bytes = cuts.head(cut.k).SerializeToString()
        head, tail = _session(head_bytes, threads), _session(cuts.tail(cut.k).SerializeToString(), threads)
        (mid,) = head.run(None, {head.get_inputs()[0].name: pixels})
        q = activations.quantize(mid)
        runs += [_call(head, pixels), _call(tail, mid), lambda x=mid: activations.quantize(x),  # type: ignore[misc]
                 lambda q=q: activations.dequantize(q)]  # type: ignore[misc]
        parts.append((cut, mid, len(head_bytes)))

    report(2 + len(candidates), total, f"timing {len(runs)} parts × {repeats} rounds")
    times = interleaved_ms(runs, repeats, warmup)
    whole_ms, int8_ms = times[0], (times[1] if int8_bytes is not None else None)
    # At least 40 runs (2 s of idling): a median of fewer, on a shared machine, moved the device
    # predictions of bench/placement by 10-20% from one profile to the next.
    whole_idle = idle_ms(runs[0], max(40, repeats)) if idle else None
    offset = 2 if int8_bytes is not None else 1
    profiles = []
    for i, (cut, mid, head_size) in enumerate(parts):
        head_ms, tail_ms, quant_ms, dequant_ms = times[offset + 4 * i: offset + 4 * i + 4]
        profiles.append(CutProfile(
            k=cut.k, tensor=cut.tensor, node=cut.node, op=cut.op, shape=[int(d) for d in mid.shape],
            tensor_bytes=int(mid.nbytes), int8_bytes=activations.int8_bytes(int(mid.size)),
            head_ms=round(head_ms, 4), tail_ms=round(tail_ms, 4),
            quantize_ms=round(quant_ms, 4), dequantize_ms=round(dequant_ms, 4),
            head_file_bytes=head_size, head_peak_bytes=head_size + max(live[: cut.k]),
        ))
    report(total, total, "done")
    fp32_bytes = fp32.stat().st_size
    return ModelProfile(
        bundle=str(bundle.root), name=m.name, version=m.version,
        machine=f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} cores",
        threads=threads, repeats=repeats, input_bytes=int(pixels.nbytes),
        output_bytes=int(sum(o.nbytes for o in outs)),
        whole_ms=round(whole_ms, 4), int8_ms=None if int8_ms is None else round(int8_ms, 4),
        images_per_s=round(images_per_s, 2), batch=batch, fp32_file_bytes=fp32_bytes, int8_file_bytes=int8_bytes,
        peak_activation_bytes=max(live) if live else 0, peak_bytes=fp32_bytes + (max(live) if live else 0),
        rss_bytes=rss, compute_nodes=len(cuts.compute), cuts=profiles,
        whole_idle_ms=None if whole_idle is None else round(whole_idle, 4),
    )
