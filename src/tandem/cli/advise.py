"""`tandem advise` (device, cloud or split?) and `tandem split` (cut a bundle into head and tail)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tandem.cli.output import console, err_console, get_settings, print_json, table
from tandem.errors import ConfigError, InvalidRequest

if TYPE_CHECKING:
    from tandem.advisor import Advice
    from tandem.advisor.tradeoffs import Tradeoffs
    from tandem.advisor.training_cost import TrainingCost
    from tandem.advisor.video import VideoAdvice, VideoSpec
    from tandem.bundle import Bundle

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
# 12 h (tandem.advisor.updates.DEFAULT_CHECK_EVERY_S; the advisor is imported only when the command runs).
DEFAULT_CHECK_EVERY_S = 43_200.0
# The platform whose app size and updates a device profile's weights count.
PLATFORM_OF = {"midrange-phone": "android", "raspberry-pi-4": "linux", "laptop": "linux", "this-machine": "linux"}


def advise(
    bundle: Annotated[Path | None, typer.Argument(help="A bundle folder (optional with --training).")] = None,
    device_profile: Annotated[str, typer.Option(help="this-machine, laptop, midrange-phone or raspberry-pi-4.")] = "this-machine",
    speed_factor: Annotated[float | None, typer.Option(min=0.001, help="Device time ÷ this machine's time (4 = four times slower); overrides the profile's.")] = None,
    device_watts: Annotated[float | None, typer.Option(min=0, help="Device power while inferring, W; overrides the profile's.")] = None,
    network: Annotated[list[str] | None, typer.Option(help="A profile (offline, 2g, 3g, 4g, 5g, wifi) or NAME:RTT_MS:UP_MBPS:DOWN_MBPS[:LOSS[:RADIO]]; repeat for several (default: all).")] = None,
    measure: Annotated[str | None, typer.Option(help="Measure the link to this server (URL) and add it as network 'measured'.")] = None,
    server_url: Annotated[str | None, typer.Option(help="Time the model on this running OIP v2 server instead of estimating it.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TANDEM_API_KEY", help="API key (predict scope) for --server-url and --measure.")] = None,
    model: Annotated[str | None, typer.Option(help="The model's name on the server (default: the bundle's).")] = None,
    server_speed_factor: Annotated[float, typer.Option(min=0.001, help="Server time ÷ this machine's time.")] = 1.0,
    server_overhead_ms: Annotated[float | None, typer.Option(min=0, help="Server time per request besides the model (default: measured with --server-url, else 2 ms).")] = None,
    instance_usd_per_hour: Annotated[float, typer.Option(min=0, help="Cloud instance price (default: AWS c6i.large).")] = 0.085,
    egress_usd_per_gb: Annotated[float, typer.Option(min=0, help="Cloud data transfer out, $/GB.")] = 0.09,
    utilisation: Annotated[float, typer.Option(min=0.01, max=1.0, help="Average load of the cloud instance.")] = 1.0,
    radio_tail: Annotated[float, typer.Option(min=0, max=1, help="Share of the radio's tail energy charged per request: 0 back to back, 1 now and then.")] = 0.0,
    sporadic: Annotated[bool, typer.Option("--sporadic", help="Requests come now and then, not back to back: device runs start from idle (slower by the measured idle factor).")] = False,
    int8_transfer: Annotated[bool, typer.Option(help="Also consider sending the split tensor int8-encoded.")] = True,
    repeats: Annotated[int, typer.Option(min=1, max=1000, help="Timed runs of each part.")] = 20,
    threads: Annotated[int, typer.Option(min=1, max=256, help="ONNX Runtime threads while profiling.")] = 1,
    out: Annotated[Path, typer.Option(help="Folder for report.html and advice.json.")] = Path("advice"),
    split_best: Annotated[bool, typer.Option("--split-best", help="Write head/tail files into the bundle for every split that is best somewhere.")] = False,
    fps: Annotated[float | None, typer.Option(min=0.001, max=240, help="Live video at this frame rate: can each placement keep it, within 1000/fps ms a frame, and at what energy per minute?")] = None,
    resolution: Annotated[str | None, typer.Option(help="Video frames' WIDTHxHEIGHT (default with --fps: 640x480); a model of any size is profiled at it.")] = None,
    frames: Annotated[str, typer.Option(help="Sample frames for the JPEG sizes with --fps: 'lfw' (TANDEM_DATA_HOME) or a folder of photos or video frames.")] = "lfw",
    sample_frames: Annotated[int, typer.Option(min=1, max=1000, help="How many sample frames to encode and run.")] = 16,
    weights: Annotated[str | None, typer.Option(help="Weigh the objectives into one recommended placement per network: latency=…,energy=…,cost=…,size=…,updates=… (default latency=1: the fastest).")] = None,
    platform: Annotated[str | None, typer.Option(help="android, ios, web or linux: whose app size and updates --weights counts (default: from --device-profile; the report covers all four).")] = None,
    registry_model: Annotated[str | None, typer.Option(help="A model in the registry with two or more versions: bytes per update (full vs delta) measured between its two latest (default: full sizes from the bundle).")] = None,
    ota_check_every: Annotated[float, typer.Option(min=1, help="Seconds between the app's checks for a new model over the air (default: 12 h).")] = DEFAULT_CHECK_EVERY_S,
    training: Annotated[str | None, typer.Option(help="What training costs where: a run folder (its measured epoch times) or a spec task=classify,epochs=30,images=1500; with a BUNDLE, added to its report.")] = None,
    training_epochs: Annotated[int | None, typer.Option(min=1, help="Epochs to estimate for --training RUN (default: the run's --epochs).")] = None,
    nodes: Annotated[list[int] | None, typer.Option(min=1, max=4096, help="Ray cluster sizes to estimate training on, in CPU nodes; repeat for several (default: 4).")] = None,
    price_table: Annotated[Path | None, typer.Option("--prices", help="Price table (TOML) for --training: cloud vCPU-hours, GPU-hours, electricity (default: the one in the package).")] = None,
    bench_results: Annotated[Path | None, typer.Option(help="Benchmark results to scale --training from (Tandem's bench/results; default: the figures in the package).")] = None,
    training_watts: Annotated[float | None, typer.Option(min=0, help="Power this machine draws while training, W (default: the price table's own_hardware.watts).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Print no progress bar while profiling.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Device, cloud or split? Profile the bundle here, model networks, energy, cost, app size and updates, recommend a placement.
    With --training: what training a run costs here, on a Ray cluster and on rented GPUs."""
    cost_of_training = (_training_cost(training, training_epochs, nodes, price_table, bench_results, training_watts)
                        if training is not None else None)
    if bundle is None:
        if cost_of_training is None:
            raise InvalidRequest("give a BUNDLE to advise on, or --training RUN (or a spec task=…,epochs=…,images=…) "
                                 "to estimate what training costs")
        _training_only(cost_of_training, out, json_out)
        return
    _needs_onnx()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tandem.advisor import CloudPrices, EnergyModel, ServerProfile, advise, parse_network
    from tandem.advisor import report as report_mod
    from tandem.advisor.appsize import check_platform
    from tandem.advisor.devices import device_profile as named_device
    from tandem.advisor.networks import NETWORKS
    from tandem.advisor.profiler import profile_bundle
    from tandem.advisor.weights import parse_weights
    from tandem.bundle import Bundle

    b = Bundle.load(bundle)  # a bad bundle fails before any option is worked on
    device = named_device(device_profile, speed_factor, device_watts)
    weighed = parse_weights(weights)
    platform = check_platform(platform or PLATFORM_OF.get(device_profile, "android"))
    versions = _registry_versions(registry_model) if registry_model else None
    nets = [parse_network(n) for n in (network or list(NETWORKS))]
    prices = CloudPrices(instance_usd_per_hour=instance_usd_per_hour, egress_usd_per_gb=egress_usd_per_gb,
                         utilisation=utilisation)
    energy = EnergyModel(tail_share=radio_tail)
    served = model or b.manifest.name
    spec, size = _video_spec(b, fps, resolution, sporadic)
    if spec is not None:  # a bad --frames fails before the profiling
        from tandem.advisor.frames import frame_files

        frames_root, frames_source = _frames_folder(frames)
        frame_list = frame_files(frames_root, sample_frames)

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=no_progress or json_out) as bar:
        task = bar.add_task("profiling", total=None)

        def step(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=f"profiling: {what}")

        # A video's frames come back to back: no runs after idling to time (--sporadic is refused with --fps).
        profile = profile_bundle(bundle, repeats=repeats, threads=threads, progress=step, size=size,
                                 idle=spec is None)
        if sporadic:
            device = device.sporadic(profile.idle_factor)
        server = ServerProfile(server_speed_factor, 2.0 if server_overhead_ms is None else server_overhead_ms,
                               f"estimated: server time ×{server_speed_factor:g} of this machine's")
        if server_url:
            import numpy as np

            from tandem.advisor.measure import measure_server

            bar.update(task, description=f"timing {served} on {server_url}")
            pixels = np.full((1, b.manifest.preprocessing.height, b.manifest.preprocessing.width, 3), 128, np.uint8)
            measured = measure_server(server_url, served, pixels, api_key=api_key)
            server = measured.server(profile.whole_ms, server_speed_factor)
            if server_overhead_ms is not None:
                server = ServerProfile(server.speed_factor, server_overhead_ms, server.source + "; overhead given")
        if measure:
            from tandem.advisor.measure import measure_link

            bar.update(task, description=f"measuring the link to {measure}")
            nets.append(measure_link(measure, served, api_key=api_key).network())
        video = None
        if spec is not None:
            from tandem.advisor.frames import measure_frames
            from tandem.advisor.video import advise_video

            bar.update(task, description=f"encoding {len(frame_list)} sample frames at {spec.resolution}")
            fp = measure_frames(b, frame_list, spec.width, spec.height, source=frames_source, threads=threads)
            video = advise_video(profile, fp, spec, nets, device=device, server=server, int8_transfer=int8_transfer)
    advice = advise(profile, nets, device=device, server=server, energy=energy, prices=prices,
                    int8_transfer=int8_transfer)
    weighed_advice = _tradeoffs(advice, b, versions, platform=platform, weights=weighed,
                                check_every_s=ota_check_every)
    if cost_of_training is not None:
        cost_of_training = _beside_serving(cost_of_training, advice)
    command = "tandem " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    json_path, html_path = report_mod.write(advice, out, command, video, weighed_advice, cost_of_training)

    written: list[int] = []
    if split_best:
        from tandem.advisor.placement import Placement
        from tandem.export.split import split_bundle

        ks = sorted({Placement.parse(d.best).k for ds in advice.decisions.values() for d in ds.values()
                     if d.best.startswith("split@")})
        if ks:
            split_bundle(bundle, ks)
        written = ks

    if json_out:
        result: dict[str, Any] = {"report": str(html_path), "advice": str(json_path), "splits_written": written,
                                  "best": {n: {o: d.to_dict() for o, d in ds.items()} for n, ds in advice.decisions.items()}}
        if video is not None:
            result["video"] = video.to_dict(every_split=False)
        result.update(weighed_advice.to_dict())
        if cost_of_training is not None:
            result["training"] = cost_of_training.to_dict()
        print_json(result)
        return
    if video is not None:
        show_video(advice, video)
    else:
        show_summary(advice)
    show_tradeoffs(weighed_advice)
    if cost_of_training is not None:
        show_training(cost_of_training)
    console.print(f"report: {html_path}   data: {json_path}", highlight=False)
    if split_best:
        console.print(f"wrote head/tail for k = {', '.join(map(str, written))} into {bundle}" if written
                      else "no split is best anywhere: nothing written", highlight=False)


def _training_cost(value: str, epochs: int | None, nodes: list[int] | None, prices: Path | None,
                   bench_results: Path | None, watts: float | None) -> TrainingCost:
    """--training's estimate: bad input (a folder without history, a bad price table) fails here, before
    any profiling."""
    import os

    from tandem.advisor.prices import load_prices
    from tandem.advisor.training_cost import DEFAULT_NODES, estimate, job_from_run, parse_spec
    from tandem.advisor.training_reference import load_reference

    table, table_source = load_prices(prices)
    reference = load_reference(bench_results)
    run = Path(value)
    if run.is_dir():
        from tandem.training.run import CONFIG, DATASET, HISTORY, read_json

        history = read_json(run / HISTORY) if (run / HISTORY).is_file() else []
        if not isinstance(history, list):
            raise InvalidRequest(f"{run / HISTORY}: not a list of epochs; is this a run folder written by `tandem train`?")
        # The epoch times were measured here: a cluster node and this machine get this machine's vCPUs.
        vcpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        job = job_from_run(run.resolve().name, read_json(run / CONFIG), read_json(run / DATASET), history,
                           vcpus=vcpus, epochs=epochs)
    elif "=" in value:
        if epochs is not None:
            raise InvalidRequest("--training-epochs is for a run folder; a spec gives epochs=… itself")
        job = parse_spec(value, reference)
    else:
        raise InvalidRequest(f"--training {value}: no such run folder; give a folder written by `tandem train`, or a "
                             "spec such as task=classify,epochs=30,images=1500")
    return estimate(job, table, reference, nodes=tuple(nodes or DEFAULT_NODES), watts=watts, prices_file=table_source)


def _beside_serving(cost: TrainingCost, advice: Advice) -> TrainingCost:
    """``cost`` with the cloud placement's cost per 1,000 predictions, for the report's comparison."""
    import dataclasses

    clouds = [ds["cost"].cloud for ds in advice.decisions.values() if ds["cost"].cloud is not None]
    return dataclasses.replace(cost, serving_usd_per_1000=clouds[0]) if clouds else cost


def _training_only(cost: TrainingCost, out: Path, json_out: bool) -> None:
    from tandem.advisor.report import write_training

    command = "tandem " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    json_path, html_path = write_training(cost, out, command)
    if json_out:
        print_json({"report": str(html_path), "data": str(json_path), "training": cost.to_dict()})
        return
    show_training(cost)
    console.print(f"report: {html_path}   data: {json_path}", highlight=False)


def show_training(cost: TrainingCost) -> None:
    from rich.markup import escape

    from tandem.advisor.report import fmt_money, fmt_seconds

    job = cost.job
    console.print(f"[bold]training {escape(job.name)}[/] ({escape(job.task)}, {job.epochs:,} epoch{'s' if job.epochs != 1 else ''} × {job.images:,} "
                  f"images; an epoch {job.epoch_s:,.1f} s on {job.vcpus} vCPU, {escape(job.basis)})", highlight=False)
    serving = cost.serving_usd_per_1000 is not None and cost.currency == "USD"
    t = table("where", "wall time", "an epoch", "cost", *(["= predictions served"] if serving else []), "basis",
              title="what training costs where")
    cheapest, fastest = cost.cheapest, cost.fastest
    for e in cost.estimates:
        mark = (" [green]cheapest[/]" if e is cheapest else "") + (" [cyan]fastest[/]" if e is fastest else "")
        served = cost.predictions_for(e)
        t.add_row(escape(e.label) + mark, fmt_seconds(e.wall_s), f"{e.epoch_s:,.2f} s", fmt_money(e.cost, e.currency),
                  *([f"{served:,.0f}" if served is not None else "—"] if serving else []), e.basis)
    console.print(t)
    for note in cost.notes:
        console.print(f"[dim]{escape(note)}[/]", highlight=False)


def show_summary(advice: Advice) -> None:
    from tandem.advisor.report import beats, fmt_bytes, fmt_value

    p, dev = advice.profile, advice.device
    console.print(f"[bold]{p.name}[/] on [bold]{dev.name}[/] (×{dev.speed_factor:g} of this machine): whole model "
                  f"{p.whole_ms * dev.speed_factor:.2f} ms, fp32 {fmt_bytes(p.fp32_file_bytes)}, int8 "
                  f"{fmt_bytes(p.int8_file_bytes)}, peak memory {fmt_bytes(p.peak_bytes)}; {len(p.cuts)} candidate "
                  f"cuts of {p.compute_nodes} compute nodes", highlight=False)
    t = table("network", "fastest", "device / cloud", "least device energy", "cheapest cloud",
              title="best placement per network")
    for net in advice.networks:
        ds = advice.decisions[net.name]
        lat, en, cost = ds["latency"], ds["energy"], ds["cost"]
        t.add_row(
            net.name,
            f"[bold]{lat.best}[/] {fmt_value(lat.value, 'latency')}\n[dim]{beats(lat)}[/]",
            f"{fmt_value(lat.device, 'latency')} / {fmt_value(lat.cloud, 'latency')}",
            f"[bold]{en.best}[/] {fmt_value(en.value, 'energy')}\n[dim]{beats(en)}[/]",
            f"[bold]{cost.best}[/] {fmt_value(cost.value, 'cost')}"
            + ("" if cost.best == "cloud" or cost.cloud is None else f"\n[dim]cloud {fmt_value(cost.cloud, 'cost')}[/]"),
        )
    console.print(t)


def _registry_versions(name: str) -> tuple[Path, Path]:
    """The bundle folders of ``name``'s two latest servable versions in the registry (older first)."""
    from tandem.cli.registry import open_registry

    with open_registry() as reg:
        live = [v for v in reg.versions(name) if v.archived is None]
        if len(live) < 2:
            raise InvalidRequest(f"--registry-model {name}: the registry holds {len(live)} servable version(s) of it; "
                                 "bytes per update are measured between two: push another version, or leave the "
                                 "option out for full sizes from the bundle")
        return reg.bundle_dir(name, live[-2].version), reg.bundle_dir(name, live[-1].version)


def _tradeoffs(advice: Advice, b: Bundle, versions: tuple[Path, Path] | None, *, platform: str,
               weights: dict[str, float], check_every_s: float) -> Tradeoffs:
    """App size and updates for ``b`` (deltas between ``versions`` when given), weighed with the rest."""
    from tandem.advisor.appsize import app_size
    from tandem.advisor.runtimes import runtime_libraries
    from tandem.advisor.tradeoffs import measure_load_ms, tradeoffs
    from tandem.advisor.updates import alias_latency, bundle_update, measure_update
    from tandem.bundle import Bundle

    updates = bundle_update(b) if versions is None else measure_update(Bundle.load(versions[0]), Bundle.load(versions[1]))
    settings = get_settings()
    p = advice.profile
    alias = alias_latency(poll_s=settings.alias_poll_s, load_ms=measure_load_ms(b.model_path("fp32")),
                          warmup_runs=settings.warmup_runs, whole_ms=p.whole_ms,
                          batch_ms=p.batch / p.images_per_s * 1000.0, speed_factor=advice.server.speed_factor)
    return tradeoffs(advice, app_size(b.manifest, runtime_libraries()), updates, platform=platform, weights=weights,
                     check_every_s=check_every_s, alias=alias)


def show_tradeoffs(t: Tradeoffs) -> None:
    from tandem.advisor.report import fmt_bytes, fmt_seconds

    e = t.size.platforms.get(t.platform, {}).get(t.device_variant)
    onnx = t.size.platforms.get(t.platform, {}).get("onnx-fp32")
    parts = []
    for x in dict.fromkeys(v for v in (e, onnx) if v is not None):
        runtime = (f"{fmt_bytes(x.runtime_bytes)} {x.runtime} ({x.runtime_basis})" if x.runtime_bytes is not None
                   else f"{x.runtime} (no figure)")
        parts.append(f"{x.variant} {fmt_bytes(x.model_bytes + x.extra_bytes)} + {runtime}"
                     + (f" = {fmt_bytes(x.total_bytes)}" if x.total_bytes is not None else ""))
    console.print(f"app size on {t.platform}: " + ("; ".join(parts) or "no variant runs there"), highlight=False)
    v = t.updates.variants.get(t.device_variant)
    lat = t.latency
    if v is not None:
        got = (f"full {fmt_bytes(v.full_bytes)}, delta {fmt_bytes(v.delta_bytes)} (v{t.updates.from_version} → "
               f"v{t.updates.to_version})" if t.updates.source == "registry" else
               f"full {fmt_bytes(v.full_bytes)} (deltas: --registry-model NAME)")
        console.print(f"an update of {t.device_variant}: {got}", highlight=False)
    ota = [o for o in lat.ota.values() if o is not None]
    fastest = min(ota, key=lambda o: o.expected_s) if ota else None
    store = lat.stores.get(t.platform)
    console.print("update latency: "
                  + (f"{t.platform} store review {fmt_seconds(store.review_s)}; " if store and store.review_s else "")
                  + (f"over the air {fmt_seconds(fastest.expected_s)} (check every {fmt_seconds(lat.check_every_s)}, "
                     f"download {fmt_seconds(fastest.download_s)} on {fastest.network}); " if fastest else "")
                  + f"server alias move {fmt_seconds(lat.alias.expected_s)}", highlight=False)
    if t.weights != {c: (1.0 if c == "latency" else 0.0) for c in t.weights}:
        console.print(f"recommended with {t.weights_text()}: "
                      + ", ".join(f"{n} {r.best.placement}" for n, r in t.recommended.items()), highlight=False)


def _video_spec(b: Bundle, fps: float | None, resolution: str | None,
                sporadic: bool) -> tuple[VideoSpec | None, tuple[int, int] | None]:
    """The video to advise on (None without --fps) and the (height, width) to profile the model at."""
    from tandem.advisor.frames import model_size
    from tandem.advisor.video import DEFAULT_RESOLUTION, VideoSpec, parse_resolution

    if resolution is None and fps is None:
        return None, None
    if fps is not None and sporadic:
        raise InvalidRequest("--sporadic is for requests now and then; a video's frames come back to back: "
                             "leave out --sporadic or --fps")
    width, height = parse_resolution(resolution or DEFAULT_RESOLUTION)
    h, w, _ = model_size(b.manifest, width, height)
    return (None if fps is None else VideoSpec(fps, width, height)), (h, w)


def _frames_folder(frames: str) -> tuple[Path, str]:
    if frames != "lfw":
        return Path(frames), f"folder {Path(frames).name}"
    from tandem.data.lfw import lfw_images_dir
    from tandem.settings import require_data_home

    home = get_settings().data_home
    if home is None:
        raise ConfigError("--frames lfw needs LFW: set TANDEM_DATA_HOME to the folder that holds lfw_home/, or pass "
                          "--frames DIR with photos or frames of your own video")
    return lfw_images_dir(require_data_home(home)), "LFW photos"


def show_video(advice: Advice, video: VideoAdvice) -> None:
    from tandem.advisor.report import fmt_video, video_shortfall

    p, dev, spec, fr = advice.profile, advice.device, video.spec, video.frames
    where = f"{fr.width}×{fr.height} (resized on the device)" if fr.resized else spec.resolution
    console.print(f"[bold]{p.name}[/] on [bold]{dev.name}[/] (×{dev.speed_factor:g} of this machine), live video at "
                  f"{spec.fps:g} fps ({spec.budget_ms:.1f} ms a frame), model at {where}: "
                  f"{p.whole_ms * dev.speed_factor:.2f} ms a frame; JPEG frame {fr.up_bytes / 1000:,.1f} kB up, answer "
                  f"{fr.down_bytes / 1000:,.1f} kB down", highlight=False)
    # A split sends an activation, larger than a JPEG frame in every image network seen so far: its column
    # is shown only where a split keeps up somewhere (the report and the JSON always have it).
    splits = any(v.best_split and video.prediction(n, v.best_split).live for n, v in video.verdicts.items())
    columns = ("device", "cloud", "best split") if splits else ("device", "cloud")
    t = table("network", *columns, "recommended",
              title="live video (✓: keeps the frame rate within the frame budget)")
    for net in video.networks:
        v = video.verdicts[net.name]
        cells = []
        for name in ("device", "cloud", v.best_split)[: len(columns)]:
            q = None if name is None else video.prediction(net.name, name)
            if name is None or q is None or not q.feasible:
                cells.append("—")
                continue
            label = f"{name}\n" if name.startswith("split@") else ""
            why = video_shortfall(q)
            cells.append(f"{label}{fmt_video(q)}" + (f"\n[dim]{why}[/]" if why else ""))
        t.add_row(net.name, *cells, f"[bold]{v.recommended}[/]" + ("" if v.live else "\n[dim]none keeps up[/]"))
    console.print(t)
    console.print(video.summary(), highlight=False)


def split(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (changed in place, atomically).")],
    k: Annotated[list[int] | None, typer.Argument(help="Cut(s): compute nodes that run on the device. None: list the candidates.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Cut a bundle's fp32 model into head_K.onnx (device) and tail_K.onnx (server), checked against the whole."""
    _needs_onnx()
    from tandem.bundle import Bundle
    from tandem.export.split import load_cuts, split_bundle

    if not k:
        b = Bundle.load(bundle)
        cuts = load_cuts(b.model_path("fp32"))
        rows: list[dict[str, Any]] = [
            {"k": c.k, "op": c.op, "node": c.node, "tensor": c.tensor, "shape": cuts.tensor_spec(c.k).shape}
            for c in cuts.cuts()
        ]
        if json_out:
            print_json({"compute_nodes": len(cuts.compute), "cuts": rows})
            return
        t = table("k", "op", "last node", "tensor", "shape", title=f"candidate cuts ({len(cuts.compute)} compute nodes)")
        for r in rows:
            t.add_row(str(r["k"]), r["op"], r["node"], r["tensor"], "×".join("N" if d < 0 else str(d) for d in r["shape"]))
        console.print(t)
        return
    b = split_bundle(bundle, k)
    if json_out:
        print_json({"splits": [s.model_dump(mode="json") for s in b.manifest.splits]})
        return
    for s in b.manifest.splits:
        console.print(f"k={s.k}: {s.head} → {s.tensor.name} {s.tensor.dtype} "
                      f"{'×'.join('N' if d < 0 else str(d) for d in s.tensor.shape)} → {s.tail}", highlight=False)


def _needs_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError as e:
        raise ConfigError("the advisor reads ONNX graphs with the onnx package, which is not installed: "
                          "pip install 'tandem[advise]'") from e


def register(app: typer.Typer) -> None:
    app.command()(advise)
    app.command()(split)
