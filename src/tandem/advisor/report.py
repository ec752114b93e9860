"""The advisor's report: advice.json for programs, report.html (self-contained, inline SVG) for people."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from tandem import atomic
from tandem.advisor import charts
from tandem.advisor.energy import RADIO_POWER
from tandem.advisor.placement import OBJECTIVES, UNITS, Advice, Decision, Placement
from tandem.advisor.runtimes import RUNTIMES
from tandem.advisor.weights import CRITERIA, Scored

if TYPE_CHECKING:
    from tandem.advisor.tradeoffs import Tradeoffs
    from tandem.advisor.training_cost import TrainingCost
    from tandem.advisor.video import VideoAdvice, VideoPrediction

JSON_FILE = "advice.json"
HTML_FILE = "report.html"
# `tandem advise --training RUN` without a bundle writes these instead (no placement advice to go with them).
TRAINING_JSON_FILE = "training.json"
TRAINING_HTML_FILE = "training.html"
_TITLES = {"latency": "End-to-end latency per request", "energy": "Device energy per request",
           "cost": "Cloud cost per 1,000 requests"}
_LABELS = {"latency": "milliseconds", "energy": "millijoules", "cost": "US dollars per 1,000"}


def fmt_value(value: float | None, objective: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if objective == "cost":
        return "$0" if value == 0 else f"${value:.2g}" if value < 0.01 else f"${value:,.2f}"
    return f"{value:,.1f} {UNITS[objective]}" if value >= 10 else f"{value:.2f} {UNITS[objective]}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


_BETTER = {"latency": "faster", "energy": "less energy", "cost": "cheaper"}


def beats(d: Decision) -> str:
    """'2.3× faster than cloud' style text for a decision's margin over the runner-up."""
    if d.runner_up is None:
        return "the only possible placement"
    ratio = d.ratio
    if ratio is None:
        return f"only possible placement besides {d.runner_up}"
    if not math.isfinite(ratio):
        return f"free; next {d.runner_up} at {fmt_value(d.runner_up_value, d.objective)}"
    if ratio < 1.1:  # "1.00×" would hide which is better
        return f"{(ratio - 1) * 100:.1f}% {_BETTER[d.objective]} than {d.runner_up}"
    return f"{ratio:.2f}× {_BETTER[d.objective]} than {d.runner_up}"


def write(advice: Advice, out: Path, command: str = "", video: VideoAdvice | None = None,
          tradeoffs: Tradeoffs | None = None, training: TrainingCost | None = None) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = advice.to_dict()
    if video is not None:
        data["video"] = video.to_dict()
    if tradeoffs is not None:
        data.update(tradeoffs.to_dict())
    if training is not None:
        data["training"] = training.to_dict()
    data["generated"] = datetime.now(UTC).isoformat(timespec="seconds")
    data["command"] = command
    json_path, html_path = out / JSON_FILE, out / HTML_FILE
    atomic.write_text(json_path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    atomic.write_text(html_path, html(advice, command, video, tradeoffs, training))
    return json_path, html_path


def write_training(training: TrainingCost, out: Path, command: str = "") -> tuple[Path, Path]:
    """training.json and training.html: what training costs where, without a bundle's placement advice."""
    out.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    data = {"training": training.to_dict(), "generated": generated, "command": command}
    json_path, html_path = out / TRAINING_JSON_FILE, out / TRAINING_HTML_FILE
    atomic.write_text(json_path, json.dumps(data, indent=2, allow_nan=False) + "\n")
    name = escape(training.job.name)
    atomic.write_text(html_path, f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>What training costs where: {name}</title>
<style>{_CSS}</style></head><body>
<h1>What training costs where: {name}</h1>
{_training(training)}
<p><small>Written by <code>{escape(command or 'tandem advise --training')}</code> at {generated}. The same numbers
are in {TRAINING_JSON_FILE}.</small></p>
</body></html>
""")
    return json_path, html_path


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _summary(advice: Advice) -> str:
    rows = []
    for net in advice.networks:
        row = [f"<b>{escape(net.name)}</b>"]
        for obj in OBJECTIVES:
            d = advice.decisions[net.name][obj]
            row.append(f"<b>{escape(d.best)}</b> {fmt_value(d.value, obj)}<br><small>{escape(beats(d))}; "
                       f"device {fmt_value(d.device, obj)}, cloud {fmt_value(d.cloud, obj)}</small>")
        rows.append(row)
    return _table(["network", "fastest", "least device energy", "cheapest cloud"], rows, "summary")


def _charts(advice: Advice) -> str:
    p = advice.profile
    cuts = sorted(p.cuts, key=lambda c: c.k)
    labels = [f"{c.k} {c.op}" for c in cuts]
    segment, prev = [], 0.0
    for c in cuts:
        segment.append(max(0.0, c.head_ms - prev))
        prev = c.head_ms
    parts = [
        charts.bars(labels, {"segment": segment},
                    title=f"Device time of each segment between cuts, this machine (whole model {p.whole_ms:.2f} ms)",
                    y_label="ms"),
        charts.lines(labels, {"head": [c.head_ms for c in cuts], "tail": [c.tail_ms for c in cuts],
                              "head + tail": [c.head_ms + c.tail_ms for c in cuts]},
                     title="Time of the head (device) and the tail (server) at each cut, this machine",
                     y_label="ms", log=False),
    ]
    parts.append(charts.bars(
        labels, {"fp32": [c.tensor_bytes for c in cuts], "int8": [c.int8_bytes for c in cuts]},
        title="Bytes sent at each cut (the cloud sends the pixels)", y_label="bytes", log=True,
        reference=("pixels", p.input_bytes)))
    # One x position per placement kind: device, splits from deep to shallow, cloud; a split's value
    # is the better of its fp32 and int8 transfer.
    order = ["device"] + [f"split@{c.k}" for c in sorted(cuts, key=lambda c: -c.k)] + ["cloud"]
    index = {name: i for i, name in enumerate(order)}
    for obj in OBJECTIVES:
        series: dict[str, Sequence[float | None]] = {}
        marks: dict[str, int] = {}
        for net in advice.networks:
            vals: list[float | None] = [None] * len(order)
            for pred in advice.predictions[net.name]:
                if not pred.feasible:
                    continue
                i = index[Placement.parse(pred.placement).name.split("+")[0]]
                v = pred.value(obj)
                vals[i] = v if vals[i] is None else min(vals[i], v)  # type: ignore[type-var]
            series[net.name] = vals
            marks[net.name] = index[advice.decisions[net.name][obj].best.split("+")[0]]
        parts.append(charts.lines(order, series, title=f"{_TITLES[obj]}, per placement and network",
                                  y_label=_LABELS[obj], log=True, marks=marks))
    return "\n".join(f'<figure>{svg}</figure>' for svg in parts)


def _profile(advice: Advice) -> str:
    p, dev = advice.profile, advice.device
    rows = [
        ["model", f"{escape(p.name)} (version {p.version if p.version is not None else '—'})"],
        ["profiled on", f"{escape(p.machine)}, {p.threads} ONNX Runtime thread(s), median of {p.repeats} runs"],
        ["whole model, fp32, batch 1", f"{p.whole_ms:.2f} ms here; {p.whole_ms * dev.speed_factor:.2f} ms on "
                                       f"{escape(dev.name)} (×{dev.speed_factor:g})"],
        ["whole model, int8, batch 1", "—" if p.int8_ms is None else f"{p.int8_ms:.2f} ms here"],
        [f"throughput, fp32, batch {p.batch}", f"{p.images_per_s:,.0f} images/s here"],
        ["model size", f"fp32 {fmt_bytes(p.fp32_file_bytes)}, int8 {fmt_bytes(p.int8_file_bytes)}"],
        ["peak memory", f"{fmt_bytes(p.peak_bytes)} (weights + {fmt_bytes(p.peak_activation_bytes)} of live "
                        f"activations); this process grew by {fmt_bytes(p.rss_bytes)} loading and running it"],
        ["request bytes", f"pixels {fmt_bytes(p.input_bytes)} up, outputs {fmt_bytes(p.output_bytes)} down"],
        ["candidate cuts", f"{len(p.cuts)} of {p.compute_nodes} compute nodes have exactly one tensor crossing"],
    ]
    return _table(["", ""], [[f"<b>{escape(a)}</b>", b] for a, b in rows], "facts")


def _cuts(advice: Advice) -> str:
    rows = [[str(c.k), escape(c.node), escape(c.op), escape("×".join(map(str, c.shape))), fmt_bytes(c.tensor_bytes),
             fmt_bytes(c.int8_bytes), f"{c.head_ms:.3f}", f"{c.tail_ms:.3f}", f"{c.head_ms + c.tail_ms:.3f}",
             fmt_bytes(c.head_file_bytes), fmt_bytes(c.head_peak_bytes)]
            for c in sorted(advice.profile.cuts, key=lambda c: c.k)]
    return _table(["k", "last node", "op", "tensor", "fp32", "int8", "head ms", "tail ms", "sum ms", "head size",
                   "head memory"], rows, "cuts")


def _assumptions(advice: Advice) -> str:
    dev, srv, pr = advice.device, advice.server, advice.prices
    nets = _table(["network", "RTT ms", "up Mbps", "down Mbps", "loss", "radio", "source"],
                  [[escape(n.name), f"{n.rtt_ms:g}", f"{n.up_mbps:g}", f"{n.down_mbps:g}", f"{n.loss:.2%}",
                    escape(n.radio), escape(n.source)] for n in advice.networks])
    radios = sorted({n.radio for n in advice.networks} - {"none"})
    power = _table(["radio", "α up mW/Mbps", "α down mW/Mbps", "β mW", "tail", "source"],
                   [[r, f"{RADIO_POWER[r].alpha_up_mw_per_mbps:g}", f"{RADIO_POWER[r].alpha_down_mw_per_mbps:g}",
                     f"{RADIO_POWER[r].beta_mw:g}", f"{RADIO_POWER[r].tail_mw:g} mW × {RADIO_POWER[r].tail_ms:g} ms",
                     escape(RADIO_POWER[r].source)] for r in radios])
    return (f"<p><b>Device</b> {escape(dev.name)}: time ×{dev.speed_factor:g} of this machine's, {dev.watts:g} W "
            f"while inferring. {escape(dev.description)}. <small>{escape(dev.source)}</small></p>"
            f"<p><b>Server</b>: time ×{srv.speed_factor:g} of this machine's, {srv.overhead_ms:g} ms per request "
            f"besides the model. <small>{escape(srv.source)}</small></p>"
            f"<p><b>Cloud prices</b>: ${pr.instance_usd_per_hour:g}/hour, egress ${pr.egress_usd_per_gb:g}/GB, "
            f"ingress ${pr.ingress_usd_per_gb:g}/GB, utilisation {pr.utilisation:.0%}. "
            f"<small>{escape(pr.source)}</small></p>"
            f"<p><b>Radio tail</b>: {advice.energy.tail_share:.0%} of the radio's tail energy is charged to each "
            f"request (0%: requests back to back; 100%: one request now and then).</p>{nets}{power}")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border-bottom:1px solid #ddd;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f4f4f4}table.cuts td{font-family:monospace;font-size:12px}
figure{margin:1.5em 0}small{color:#666}h2{margin-top:2em;border-bottom:2px solid #eee}code{background:#f4f4f4}
"""


def fmt_video(p: VideoPrediction) -> str:
    """'46.1 fps · 22 ms ✓' style text: the rate a placement sustains, one frame's latency, and whether it is live."""
    if not p.feasible:
        return "—"
    ms = f"{p.latency_ms:,.0f}" if p.latency_ms >= 10 else f"{p.latency_ms:.1f}"
    return f"{p.fps:,.1f} fps · {ms} ms {'✓' if p.live else '✗'}"


def video_shortfall(p: VideoPrediction) -> str:
    """Why a placement is not live ('' if it is): the stage that limits its rate, and 'late' past the budget."""
    if not p.feasible or p.live:
        return ""
    why = []
    if not p.meets_fps:
        why.append(f"needs {p.uplink_mbps:,.1f} Mbit/s up" if p.bottleneck == "uplink" else
                   f"needs {p.downlink_mbps:,.1f} Mbit/s down" if p.bottleneck == "downlink" else
                   f"{p.bottleneck} too slow")
    if not p.meets_budget:
        why.append("late")
    return "; ".join(why)


def _video(video: VideoAdvice) -> str:
    spec, fr = video.spec, video.frames
    rows = []
    for net in video.networks:
        v = video.verdicts[net.name]
        cells = [f"<b>{escape(net.name)}</b>"]
        for name in ("device", "cloud", v.best_split):
            if name is None:
                cells.append("—")
                continue
            p = video.prediction(net.name, name)
            label = f"{escape(name)}: " if name.startswith("split@") else ""
            cells.append(f"{label}{escape(fmt_video(p))}<br><small>{escape(video_shortfall(p))}"
                         f"{'; ' if video_shortfall(p) else ''}{p.energy_j_per_minute:,.1f} J/min"
                         f"{f', {p.uplink_mbps:,.2f} Mbit/s up' if p.up_bytes else ''}</small>"
                         if p.feasible else "—")
        cells.append(f"<b>{escape(v.recommended)}</b><br><small>{escape(v.reason)}</small>")
        rows.append(cells)
    table = _table(["network", "device", "cloud", "best split", "recommended"], rows, "summary")
    labels = [n.name for n in video.networks]

    def series(what: str) -> dict[str, Sequence[float | None]]:
        out: dict[str, Sequence[float | None]] = {}
        for kind in ("device", "cloud", "best split"):
            vals: list[float | None] = []
            for net in video.networks:
                name = video.verdicts[net.name].best_split if kind == "best split" else kind
                p = None if name is None else video.prediction(net.name, name)
                vals.append(getattr(p, what) if p is not None and p.feasible else None)
            out[kind] = vals
        return out

    fps_chart = charts.bars(labels, series("fps"), log=True, reference=(f"{spec.fps:g} fps required", spec.fps),
                            title=f"Frames per second each placement sustains at {spec.resolution}",
                            y_label="frames per second")
    energy_chart = charts.bars(labels, series("energy_j_per_minute"), log=True, y_label="joules",
                               title="Device energy per minute of video (at the frames delivered)")
    size = (f"{fr.width}×{fr.height}, resized on the device from {spec.resolution}" if fr.resized
            else f"{spec.resolution}")
    answer = (f"a JPEG frame of the model's output, {fmt_bytes(fr.down_bytes)} on average" if fr.answer == "jpeg"
              else f"the model's tensors, {fmt_bytes(fr.down_bytes)}")
    return (f"<p><b>{escape(video.summary())}.</b> Required: {spec.fps:g} frames per second, each answered within "
            f"the {spec.budget_ms:.1f} ms frame budget (✓: both met). Frames stream: the device, the uplink, the "
            f"server and the downlink work on different frames at once, so a placement sustains its slowest stage's "
            f"rate, and a frame takes the sum of them.</p>"
            f"<p>A frame goes up as a JPEG (quality {fr.quality}) at {escape(size)}: {fmt_bytes(fr.up_bytes)} on "
            f"average over {fr.count} sample frames ({escape(fr.source)}); the answer is {answer}. JPEG encoding "
            f"{fr.encode_ms:.2f} ms, decoding {fr.decode_ms:.2f} ms here (scaled like the model on each side).</p>"
            f"{table}<figure>{fps_chart}</figure><figure>{energy_chart}</figure>")


_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}


def fmt_money(value: float, currency: str) -> str:
    """'$0.17', '$0.0053', '€12.40', '1.20 CHF': two significant digits below 1."""
    amount = "0" if value == 0 else f"{value:.2g}" if value < 1 else f"{value:,.2f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{amount}" if symbol else f"{amount} {currency}"


def _training(t: TrainingCost) -> str:
    job = t.job
    cheapest, fastest = t.cheapest, t.fastest
    rows = []
    for e in t.estimates:
        mark = " ★" if e is cheapest else ""
        mark += " ⚡" if e is fastest else ""
        served = t.predictions_for(e)
        rows.append([f"<b>{escape(e.what)}</b>{mark}", fmt_seconds(e.wall_s), f"{e.epoch_s:,.2f} s",
                     fmt_money(e.cost, e.currency) + (f"<br><small>{e.energy_kwh:.3g} kWh</small>"
                                                      if e.energy_kwh is not None else ""),
                     *([f"{served:,.0f}"] if served is not None else []),
                     f"<b>{escape(e.basis)}</b>", f"<small>{escape(e.source)}</small>",
                     f"<small>{escape(e.price)}</small>"])
    head = ["where", "wall time", "an epoch", "cost", *(["= predictions served"] if t.serving_usd_per_1000
                                                        and t.currency == "USD" else []),
            "basis", "how the time was had", "price"]
    table = _table(head, rows, "summary")
    labels = [e.placement for e in t.estimates]
    time_chart = charts.bars(labels, {"wall time": [e.wall_s / 3600.0 for e in t.estimates]}, log=True,
                             title="Wall time to train, per placement", y_label="hours")
    cost_chart = charts.bars(labels, {"cost": [e.cost or None for e in t.estimates]}, log=True,
                             title=f"Cost to train, per placement ({t.currency})", y_label=t.currency)
    serving = ""
    if t.serving_usd_per_1000 and t.currency == "USD":
        n_cheap, n_fast = t.predictions_for(cheapest), t.predictions_for(fastest)
        serving = (f"<p><b>Against serving</b>: the cloud placement above costs {fmt_money(t.serving_usd_per_1000, 'USD')} "
                   f"per 1,000 predictions, so training once on {escape(cheapest.what)} costs what "
                   f"{n_cheap or 0:,.0f} predictions cost to serve, and on {escape(fastest.what)} "
                   f"{n_fast or 0:,.0f}.</p>")
    notes = "".join(f"<p><small>{escape(n)}</small></p>" for n in t.notes)
    ray = t.ray
    return (f"<p><b>{escape(job.name)}</b>: {escape(job.task)}, {job.epochs:,} epoch{'s' if job.epochs != 1 else ''} "
            f"of {job.images:,} images; "
            f"an epoch took {job.epoch_s:,.1f} s on {job.vcpus} vCPU ({escape(job.source)}). ★ cheapest "
            f"({escape(cheapest.what)}, {fmt_money(cheapest.cost, cheapest.currency)}), ⚡ fastest "
            f"({escape(fastest.what)}, {fmt_seconds(fastest.wall_s)}). <b>measured</b>: this job's own epoch times, or "
            f"a benchmark's of the same task and network on that hardware; <b>scaled</b>: from a measurement by the "
            f"factor the row names. Prices: {escape(t.prices_file)} (<code>--prices FILE</code>); benchmark figures: "
            f"{escape(t.reference)}.</p>{serving}{table}<figure>{time_chart}</figure><figure>{cost_chart}</figure>"
            f"<p><small>Ray: {escape(str(ray.get('source', '')))}. A node has as many vCPUs as the machine the epoch "
            f"time was measured on; one Ray worker per node.</small></p>{notes}")


def fmt_seconds(s: float | None) -> str:
    """'0.35 s', '12 min', '6.0 h', '3.0 days'."""
    if s is None or not math.isfinite(s):
        return "—"
    if s < 10:
        return f"{s:.2f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _scored(sc: Scored | None) -> str:
    return "—" if sc is None else f"{escape(sc.placement)} {sc.score:.3f}"


def _recommended(t: Tradeoffs) -> str:
    used = [c for c in CRITERIA if t.weights.get(c, 0) > 0]
    rows = []
    for net, r in t.recommended.items():
        rows.append([f"<b>{escape(net)}</b>", f"<b>{escape(r.best.placement)}</b> {r.best.score:.3f}",
                     _scored(r.runner_up), _scored(r.device), _scored(r.cloud), _scored(r.best_split)])
    table = _table(["network", "recommended (score)", "runner-up", "device", "cloud", "best split"], rows, "summary")
    return (f"<p>Weights {escape(t.weights_text())} (summing to 1). Each objective is normalised over the "
            f"placements possible on a network, 0 for the best and 1 for the worst, and the weighted sum is the "
            f"score: the lowest is recommended. Weighed here: {escape(', '.join(used))}; app size and updates are "
            f"those on <b>{escape(t.platform)}</b>, the device embedding <b>{escape(t.device_variant)}</b>. "
            f"<code>--weights latency=…,energy=…,cost=…,size=…,updates=…</code> changes them; the default "
            f"(latency=1) recommends the fastest placement.</p>{table}")


def _app_size(t: Tradeoffs) -> str:
    size = t.size
    rows = []
    for platform, row in size.platforms.items():
        smallest = size.smallest(platform)
        for key, e in sorted(row.items(), key=lambda kv: (kv[1].total_bytes is None, kv[1].total_bytes or 0)):
            best = smallest is not None and smallest.variant == key
            runtime = (f"{escape(e.runtime)}: {fmt_bytes(e.runtime_bytes)} <small>({escape(e.runtime_basis or '')})"
                       f"</small>" if e.runtime_bytes is not None else f"{escape(e.runtime)}: <small>no figure</small>")
            total = fmt_bytes(e.total_bytes)
            rows.append([escape(platform), f"<b>{escape(key)}</b>" if best else escape(key), fmt_bytes(e.model_bytes),
                         fmt_bytes(e.extra_bytes) if e.extra_bytes else "—", runtime,
                         f"<b>{total}</b>" if best else total])
    table = _table(["platform", "variant", "model", "app files", "runtime library", "app gains"], rows, "sizes")
    libs = []
    for platform, libraries in size.runtimes.items():
        for fmt, lib in libraries.items():
            name = RUNTIMES[platform].get(fmt)
            if name is None:
                continue
            if lib is None:
                libs.append([escape(platform), escape(name), "—", "—", "unknown",
                             "no published figure found, and not installed here: measure your own build", ""])
                continue
            libs.append([escape(platform), escape(lib.runtime), fmt_bytes(lib.bytes), fmt_bytes(lib.compressed_bytes),
                         f"<b>{escape(lib.basis or '')}</b>", escape(lib.what), f"<small>{escape(lib.source)}</small>"])
    lib_table = _table(["platform", "runtime", "bytes", "compressed", "basis", "what", "source"], libs, "sizes")
    platforms = list(size.platforms)
    keys = sorted({k for row in size.platforms.values() for k in row})
    series: dict[str, Sequence[float | None]] = {
        k: [size.platforms[p][k].total_bytes if k in size.platforms[p] else None for p in platforms] for k in keys}
    chart = charts.bars(platforms, series, title="Bytes an app gains by embedding each variant, per platform",
                        y_label="bytes")
    extras = ", ".join(f"{escape(rel)} {fmt_bytes(n)}" for rel, n in size.extras.items()) or "none"
    return (f"<p>What an app gains by embedding each variant: its model file and the files the bundle's apps "
            f"name (here: {extras}), measured from the bundle, plus the runtime library for that format on that "
            f"platform. <b>published</b> figures come from the runtime's project (the source says where) and were "
            f"not measured here; <b>measured</b> ones were, on this machine (Linux: the Python wheels' shared "
            f"libraries, a proxy for a native app's). Bold: the smallest on each platform.</p>{table}"
            f"<figure>{chart}</figure>{lib_table}")


def _updates(t: Tradeoffs) -> str:
    u, lat = t.updates, t.latency
    if u.source == "registry":
        where = (f"measured between versions {u.from_version} and {u.to_version} of {escape(u.model)} in the "
                 f"registry: a delta patches each file from the older version's (0 for a file that did not change)")
    else:
        where = ("from the bundle alone: full files only (give <code>--registry-model NAME</code>, a model with two "
                 "or more versions, to measure deltas)")
    rows = []
    for key, v in u.variants.items():
        d = v.delta_bytes
        share = f"{d / v.full_bytes:.1%}" if d is not None and v.full_bytes else "—"
        rows.append([escape(key), fmt_bytes(v.full_bytes), fmt_bytes(d), share,
                     "<br>".join(f"{escape(f.path)}: {fmt_bytes(f.full_bytes)} / {fmt_bytes(f.delta_bytes)}"
                                 f"{f' ({escape(f.kind)})' if f.kind else ''}" for f in v.files)])
    sizes = _table(["variant", "full", "delta", "delta ÷ full", "files (full / delta)"], rows, "sizes")
    stores = _table(["platform", "store review", "up to", "", "source"],
                    [[escape(p), fmt_seconds(s.review_s), fmt_seconds(s.up_to_s), escape(s.summary),
                      f"<small>{escape(s.source)}</small>"] for p, s in lat.stores.items()])
    alias = lat.alias
    nets = []
    for net, o in lat.ota.items():
        nets.append([escape(net), fmt_seconds(o.download_s) if o else "offline: none", fmt_seconds(o.expected_s) if o
                     else "—", fmt_seconds(o.worst_s) if o else "—", fmt_seconds(alias.expected_s)])
    ota = _table(["network", "OTA download", "OTA expected", "OTA worst", "server alias move"], nets, "summary")
    return (f"<h3>Bytes per update over the air</h3><p>Encrypted as the OTA sends them; {where}.</p>{sizes}"
            f"<h3>Update latency</h3><p>From a new version to the model answering with it. <b>App store</b>: a new "
            f"app release waits for the store's review (published figures, not measured), then for every user to "
            f"install it (days to weeks; not modelled). <b>Over the air</b>: the app's next check (every "
            f"{fmt_seconds(lat.check_every_s)}, <code>--ota-check-every</code>; half that on average) and the "
            f"download of {escape(lat.variant)}'s update ({fmt_bytes(sum(lat.bytes))}) on each network. "
            f"<b>Server-side alias move</b> (cloud, and a split's tail): {escape(alias.source)}; loading measured "
            f"here {alias.load_ms:.0f} ms, warm-up {alias.warmup_ms:.0f} ms → {fmt_seconds(alias.expected_s)} on "
            f"average, {fmt_seconds(alias.worst_s)} at worst.</p>{stores}{ota}")


def html(advice: Advice, command: str = "", video: VideoAdvice | None = None,
         tradeoffs: Tradeoffs | None = None, training: TrainingCost | None = None) -> str:
    p = advice.profile
    name = escape(p.name)
    video_part = "" if video is None else f"<h2>Live video</h2>\n{_video(video)}\n"
    # Next to the per-request cost of serving (the summary's "cheapest cloud" column): what training costs.
    training_part = "" if training is None else f"<h2>What training costs where</h2>\n{_training(training)}\n"
    weighed = "" if tradeoffs is None else f"<h2>Recommended placement, weighed</h2>\n{_recommended(tradeoffs)}\n"
    sizes = "" if tradeoffs is None else f"<h2>App size and updates</h2>\n{_app_size(tradeoffs)}\n{_updates(tradeoffs)}\n"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Placement advice: {name}</title>
<style>{_CSS}</style></head><body>
<h1>Device, cloud or split: {name}</h1>
<p>Predicted for <b>{escape(advice.device.name)}</b> from measurements on this machine. Every candidate
placement — all on the device, all in the cloud, and split after each of {len(p.cuts)} cut points
(the device runs the first k compute nodes and sends the one tensor that crosses, fp32 or int8, to
the server, which runs the rest) — on every network profile. docs/advisor.md gives the formulas.</p>
{video_part}<h2>Best placement per network and objective</h2>
{_summary(advice)}
{training_part}{weighed}{sizes}<h2>The model on this machine</h2>
{_profile(advice)}
<h2>Plots</h2>
{_charts(advice)}
<h2>Candidate cuts</h2>
{_cuts(advice)}
<h2>Assumptions and sources</h2>
{_assumptions(advice)}
<p><small>Written by <code>{escape(command or 'tandem advise')}</code> at
{datetime.now(UTC).isoformat(timespec='seconds')}. The same numbers are in advice.json.</small></p>
</body></html>
"""
