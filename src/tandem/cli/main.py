"""`tandem`: train, export, inspect and run your own models."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tandem.cli import advise as advise_cli
from tandem.cli import ota as ota_cli
from tandem.cli import registry as registry_cli
from tandem.cli import serve as serve_cli
from tandem.cli import training_job as training_job_cli
from tandem.cli.celebmatch import app as celebmatch_app
from tandem.cli.data import app as data_app
from tandem.cli.devices import app as devices_app
from tandem.cli.help import TandemGroup
from tandem.cli.keys import app as keys_app
from tandem.cli.output import console, err_console, get_settings, print_json, setup_logging
from tandem.errors import ConfigError, TandemError

app = typer.Typer(
    name="tandem",
    cls=TandemGroup,
    help="Own your model end to end: train it, export a bundle, run it on the device or in the cloud.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(celebmatch_app, name="celebmatch")
app.add_typer(keys_app, name="keys")
app.add_typer(devices_app, name="devices")
app.add_typer(data_app, name="data")

def _given(ctx: typer.Context, option: str) -> bool:
    """Whether the user set ``option`` (on the command line or through its environment variable),
    rather than it holding its default: a task whose own default differs applies it otherwise."""
    src = ctx.get_parameter_source(option)
    return src is not None and src.name in ("COMMANDLINE", "ENVIRONMENT")


def name_from_folder(out: Path) -> str:
    """A model's name as the user sees it: the run folder's (runs/faces -> faces), with what a model
    name may not hold (bundle.NAME_RE) replaced by '-'; 'model' when nothing is left."""
    from tandem.bundle.manifest import NAME_RE

    name = re.sub(r"[^A-Za-z0-9._-]+", "-", out.resolve().name).strip("-.")[:64]
    return name if name and NAME_RE.match(name) else "model"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also print debug messages (Tandem's and its libraries').")] = False) -> None:
    setup_logging(verbose)


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="A folder with one sub-folder per class, or 'lfw' (TANDEM_DATA_HOME).")],
    out: Annotated[Path | None, typer.Option(help="Run folder for checkpoints, plots and metrics (required, but with --remote).")] = None,
    min_faces: Annotated[int | None, typer.Option(help="Keep only classes with at least this many images (default: 20 for lfw, 1 for a folder).")] = None,
    subset: Annotated[float, typer.Option(help="Use this fraction of each class (try the pipeline small first).")] = 1.0,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training images (the learning-rate schedule spans them all).")] = 30,
    batch_size: Annotated[int, typer.Option(min=2, help="Images per training step.")] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate.")] = 3e-3,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(min=0, help="Fixes the split, the initial weights and every random draw: the same seed, the same run.")] = 0,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.5, help="Held out for validation; 0 trains on it too (the test split stays the same).")] = 0.1,
    stop_after: Annotated[int | None, typer.Option(help="Stop after this many epochs of the schedule; continue later with --resume.")] = None,
    stem_stride: Annotated[int, typer.Option(min=1, max=2, help="2 = 3.7x less compute, lower accuracy; for quick runs.")] = 1,
    name: Annotated[str | None, typer.Option(help="Model name written into the bundle (default: the --out folder's name, e.g. runs/faces -> faces).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    workers: Annotated[int | None, typer.Option(min=1, max=1024, help="Train data parallel on this many Ray Train workers (same seed and global batch: the same training; needs tandem\\[ray]).")] = None,
    address: Annotated[str | None, typer.Option(help="With --workers: the Ray cluster (ray://host:10001 or auto; default TANDEM_RAY_ADDRESS, else a local instance sized to this machine).")] = None,
    gpus_per_worker: Annotated[float, typer.Option(min=0, help="With --workers: GPUs each worker reserves (implies --device cuda).")] = 0.0,
    objective: Annotated[str, typer.Option(help="classify: a classifier over the classes; embed: a face embedding that matches people it never saw (celebmatch).")] = "classify",
    teacher: Annotated[str, typer.Option(help="embed: also learn from dlib's face recogniser (needs tandem\\[teacher]); none: the margin loss alone.")] = "none",
    backbone: Annotated[str, typer.Option(help="embed: dlib (dlib's face ResNet, trained on ~3M faces, fine-tuned on yours; 22 MB, 5.6 MB int8) or mobile (a small network trained from scratch; 3.6 MB, weaker on people it never saw).")] = "dlib",
    size: Annotated[int | None, typer.Option(min=32, max=256, help="embed: side of the aligned face crop in pixels (dlib: 150; mobile: default 80).")] = None,
    region_views: Annotated[float, typer.Option(min=0.0, max=0.9, help="embed: share of training views that show only the eyes, nose or mouth.")] = 0.2,
    max_images: Annotated[int | None, typer.Option(min=2, help="embed: train on at most this many photos, spread over the people (the teacher's budget); stylize: at most this many photos (default 1000).")] = None,
    task: Annotated[str, typer.Option(help="classify: a network over labelled photos (see --objective); stylize: an image-to-image effect (deep art) learned from --teacher-effect, --style-image, or --data DIR holding input/ and target/ pairs.")] = "classify",
    teacher_effect: Annotated[str | None, typer.Option(help="stylize: the slow effect to imitate: stylization, pencil, detail, edge-preserving or smooth (OpenCV's).")] = None,
    style_image: Annotated[Path | None, typer.Option(help="stylize: a picture whose style to learn (a neural style: its textures and colours on your photos).")] = None,
    style_weight: Annotated[float, typer.Option(min=0.0, help="stylize --style-image: weight of the style loss (more: more of the style's texture).")] = 10.0,
    content_weight: Annotated[float, typer.Option(min=0.0, help="stylize --style-image: weight of the content loss (more: more of the photo's shapes).")] = 1.0,
    photo_size: Annotated[int, typer.Option(min=32, max=1024, help="stylize: photos are centre-squared to this side; the teacher works on them whole.")] = 256,
    crop: Annotated[int, typer.Option(min=16, max=1024, help="stylize: side of the random training crops.")] = 128,
    remote: Annotated[str | None, typer.Option(help="Train on your training service instead (a `tandem serve` with TANDEM_RAY_JOBS_ADDRESS, docs/scale.md): pack and upload --data, follow the Ray Job it runs, print the version it pushes into that registry. A classifier; no --out.")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="TANDEM_API_KEY", help="With --remote: an API key with scope train (or admin).")] = None,
    alias: Annotated[str | None, typer.Option(help="With --remote: point this alias (e.g. production) at the pushed version, in the same transaction as the push.")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Print no progress bar.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Train an image classifier / face-embedding network / image effect on your data."""
    if remote is not None:
        _train_remote(ctx, remote, api_key, data, name, alias, subset, epochs, batch_size, lr, device, seed, val_fraction,
                      stem_stride, workers, gpus_per_worker, not no_progress and not json_out, json_out)
        return
    if alias is not None:
        raise ConfigError("--alias is for --remote (a local run is pushed with `tandem push`, then `tandem alias`)")
    if out is None:
        raise ConfigError("--out is required: the run folder for checkpoints, plots and metrics (or train on your "
                          "training service with --remote URL)")
    if task == "stylize":
        if workers is not None or objective != "classify" or teacher != "none":
            raise ConfigError("--task stylize trains on one machine from its --teacher-effect, --style-image or "
                              "pairs: drop --workers, --objective and --teacher")
        _train_stylize(ctx, data, out, name, subset, max_images, epochs, batch_size, lr, device, seed, teacher_effect,
                       photo_size, crop, val_fraction, resume, not no_progress and not json_out, json_out,
                       style_image, style_weight, content_weight)
        return
    if task != "classify":
        raise ConfigError(f"unknown --task {task!r}: use classify (with --objective classify or embed) or stylize")
    if resume:
        from tandem.training.stylize import is_stylize_run

        if is_stylize_run(out):
            raise ConfigError(f"{out} holds a --task stylize run: resume it with --task stylize and its --teacher-effect")
    if teacher_effect is not None or style_image is not None:
        raise ConfigError("--teacher-effect and --style-image are for --task stylize")
    from tandem.data.resolve import default_min_faces
    from tandem.training.embed import FINE_TUNE_LR
    from tandem.training.run import TrainConfig

    embed = objective == "embed"
    dlib = embed and backbone == "dlib"
    if dlib and teacher != "none":
        raise ConfigError("--backbone dlib starts from dlib's own network: --teacher dlib would teach it itself; "
                          "drop --teacher (or use --backbone mobile)")
    cfg = TrainConfig(data=data, out=out, name=name or name_from_folder(out), min_faces=default_min_faces(data, min_faces, objective), subset=subset,
                      epochs=epochs, batch_size=batch_size, lr=lr if _given(ctx, "lr") or not dlib else FINE_TUNE_LR,
                      device=device, seed=seed, stem_stride=2 if embed else stem_stride, stop_after=stop_after, val_fraction=val_fraction,
                      objective=objective, teacher=teacher if embed else "none",
                      align_size=size if size is not None else (150 if dlib else 80), backbone=backbone if embed else "mobile",
                      region_views=region_views if embed else 0.0, max_images=max_images if embed else None,
                      # With a teacher the margin loss only nudges: at equal weight it slowed learning here
                      # (verification of unseen people 0.73 against 0.79 for distillation alone after 5 epochs).
                      arc_weight=0.1 if embed and teacher != "none" else 1.0)
    cfg.validate()  # before any data is read
    show = not no_progress and not json_out
    if embed and workers is not None:
        raise ConfigError("--objective embed trains on one machine for now; drop --workers")
    if workers is None and (address is not None or gpus_per_worker):
        raise ConfigError("--address and --gpus-per-worker are for Ray Train: add --workers N")
    from tandem.cli.resume import stopped_training

    try:
        if embed:
            from tandem.training.embed import train_embed

            result = train_embed(cfg, resume=resume, show_progress=show, data_home=get_settings().data_home)
        elif workers is None:
            from tandem.training.trainer import train as run_train

            result = run_train(cfg, resume=resume, show_progress=show, data_home=get_settings().data_home)
        else:
            from tandem.ray_cluster import require_ray

            require_ray()
            from tandem.training.distributed import RayOptions, train_on_ray

            settings = get_settings()
            result = train_on_ray(cfg, RayOptions(workers, address, gpus_per_worker), settings.ray, settings.data_home,
                                  resume=resume, show_progress=show, s3=settings.registry)
    except KeyboardInterrupt:
        raise stopped_training(ctx, out, epochs) from None
    summary = {"run_dir": str(result.run_dir), "epochs": result.epochs, "best_epoch": result.best_epoch,
               ("best_val_verification" if embed else "best_val_top1"): result.best_val_acc, "train_images": result.train_images,
               "classes": result.classes, "seconds": round(result.seconds, 1)}
    if json_out:
        print_json(summary)
        return
    what = "verification accuracy on unseen people" if embed else "top-1"
    console.print(f"[bold green]trained[/] {result.classes} {'people' if embed else 'classes'} on {result.train_images} "
                  f"images in {result.seconds:.0f}s; best validation {what} {result.best_val_acc:.3f} "
                  f"(epoch {result.best_epoch})")
    console.print(f"run folder: {out}  (checkpoint.pt, best.pt, curves.png, confusion.png)", markup=False,
                  highlight=False)


REMOTE_REFUSES = ("min_faces", "stop_after", "resume", "address", "objective", "teacher", "backbone", "size",
                  "region_views", "max_images", "task", "teacher_effect", "style_image", "out")


def _train_remote(ctx: typer.Context, url: str, api_key: str | None, data: str, name: str | None, alias: str | None,
                  subset: float, epochs: int, batch_size: int, lr: float, device: str, seed: int, val_fraction: float,
                  stem_stride: int, workers: int | None, gpus: float, show: bool, json_out: bool) -> None:
    from tandem.cli.remote import check_spec, train_remote
    from tandem.protocol.training import TrainingSpec

    given = [o for o in REMOTE_REFUSES if _given(ctx, o)]
    if given:
        raise ConfigError(f"--remote trains a classifier as the training service takes it (docs/scale.md): drop "
                          f"--{given[0].replace('_', '-')}")
    spec = check_spec(TrainingSpec(name=name or name_from_folder(Path(data)), alias=alias, epochs=epochs, subset=subset,
                                   batch_size=batch_size, lr=lr, seed=seed, val_fraction=val_fraction,
                                   stem_stride=stem_stride, workers=workers or 1,
                                   gpus=gpus or (1.0 if device == "cuda" else 0.0)))
    verbose = bool(ctx.find_root().params.get("verbose"))
    try:
        summary = train_remote(url, api_key, data, spec, show, verbose)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if json_out:
        print_json(summary)
        return
    to = f" and pointed {summary['alias']} at it" if summary["alias"] else ""
    best = summary["best_val_top1"]
    console.print(f"[bold green]pushed[/] {summary['name']} version {summary['version']}{to} (training "
                  f"{summary['training']}, {summary['epochs']} epochs, "
                  f"{'best validation top-1 ' + format(best, '.3f') + ', ' if best is not None else ''}"
                  f"{summary['seconds']['total']:.0f}s)", highlight=False)


def _train_stylize(ctx: typer.Context, data: str, out: Path, name: str | None, subset: float, max_images: int | None,
                   epochs: int, batch_size: int, lr: float, device: str, seed: int, effect: str | None,
                   photo_size: int, crop: int, val_fraction: float, resume: bool, show: bool, json_out: bool,
                   style_image: Path | None, style_weight: float, content_weight: float) -> None:
    from tandem.cli.resume import stopped_training
    from tandem.data.photos import is_pair_folder
    from tandem.training.stylize import (
        NEURAL_STYLE,
        PAIRS,
        StylizeConfig,
        is_stylize_run,
        load_stylize_run,
        train_stylize,
    )

    if effect is not None and style_image is not None:
        raise ConfigError("--teacher-effect and --style-image are two different effects: give one of them")
    if resume and effect is None and style_image is None and is_stylize_run(out):
        # A resumed run learns from what it learned from: no need to name it again.
        kept, _ = load_stylize_run(out)
        effect, style_image = kept.effect, None if kept.style_image is None else Path(kept.style_image)
    if style_image is not None:
        effect = NEURAL_STYLE
    elif effect is None and is_pair_folder(data):
        effect = PAIRS
    elif effect is None:
        raise ConfigError("--task stylize learns from --teacher-effect (stylization, pencil, detail, edge-preserving or smooth), "
                          "--style-image PICTURE, or --data DIR holding input/ and target/ (before/after pairs); give one")
    # The classifier's default batch does not fit an effect: 64 crops a step.
    cfg = StylizeConfig(data=data, out=out, effect=effect, name=name or name_from_folder(out),
                        subset=subset, max_images=max_images, epochs=epochs,
                        batch_size=batch_size if _given(ctx, "batch_size") else 16, lr=lr, photo_size=photo_size,
                        crop=crop, val_fraction=val_fraction, seed=seed, device=device,
                        style_image=None if style_image is None else str(style_image.resolve()),
                        style_weight=style_weight, content_weight=content_weight)
    cfg.validate()  # before any photo is read
    try:
        result = train_stylize(cfg, resume=resume, show_progress=show, data_home=get_settings().data_home)
    except KeyboardInterrupt:
        raise stopped_training(ctx, out, epochs) from None
    summary = {"run_dir": str(result.run_dir), "epochs": result.epochs, "best_epoch": result.best_epoch,
               "best_val_psnr_db": _rounded(result.best_psnr, 2), "best_val_ssim": _rounded(result.best_ssim, 4),
               "best_val_style_loss": _rounded(result.best_style_loss, 4),
               "best_val_content_loss": _rounded(result.best_content_loss, 4),
               "train_images": result.train_images, "held_out_images": result.held_out_images,
               "seconds": round(result.seconds, 1)}
    if json_out:
        print_json(summary)
        return
    if result.best_psnr is not None and result.best_ssim is not None:
        close = (f"PSNR against the {'teacher' if effect != PAIRS else 'targets'} {result.best_psnr:.2f} dB, "
                 f"SSIM {result.best_ssim:.3f}")
    else:
        close = f"style loss {result.best_style_loss:.4f}, content loss {result.best_content_loss:.4f}"
    console.print(f"[bold green]trained[/] {effect} on {result.train_images} photos in {result.seconds:.0f}s; held-out "
                  f"{close} (epoch {result.best_epoch})")
    console.print(f"run folder: {out}  (checkpoint.pt, best.pt, history.json, contact_sheet.png)", markup=False,
                  highlight=False)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `tandem train`.")],
    out: Annotated[Path, typer.Option(help="Bundle folder to write (replaced atomically).")],
    name: Annotated[str | None, typer.Option(help="Model name (default: the run's).")] = None,
    split: Annotated[list[int] | None, typer.Option(help="Also cut the model into head_K/tail_K for split inference (repeatable; `tandem split BUNDLE` lists the Ks).")] = None,
    formats: Annotated[str | None, typer.Option(help="Formats to write, comma-separated: onnx (always written), litert (fp32 and int8 .tflite; or litert-fp32, litert-int8), executorch (fp32 and int8 .pte), each checked against PyTorch on real photos; coreml (fp16 .mlpackage, zipped; its spec checked: Core ML runs only on Apple's systems). Default: for a classifier, every format whose converter is installed (make install: all); a face embedding gets its variants (litert-fp32, executorch-fp32, coreml) only when named here.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export a trained run to a bundle: fp32 ONNX, static int8 ONNX, LiteRT, ExecuTorch and Core ML variants, manifest with metrics."""
    from tandem.export.exporter import ExportOptions, export_run

    settings = get_settings()
    options = ExportOptions(name=name, formats=formats, litert_python=settings.litert_python)
    with console.status("exporting, quantizing and measuring on the test images…", spinner="dots"):
        bundle = export_run(run_dir, out, options, settings.data_home)
        if split:
            from tandem.export.split import split_bundle

            bundle = split_bundle(out, split)
    if json_out:
        print_json(bundle.manifest.model_dump(mode="json"))
        return
    from tandem.cli.info import show_bundle

    show_bundle(bundle)


@app.command()
def info(bundle: Annotated[str, typer.Argument(help="A bundle folder written by `tandem export`, or a stored "
                                                "version: NAME, NAME:VERSION or NAME:ALIAS (the registry's).")],
         json_out: JsonOpt = False) -> None:
    """Verify a bundle (a folder, or a version in the registry) and print its manifest readably."""
    from tandem.bundle import Bundle
    from tandem.cli.info import show_bundle

    stored = None
    if Path(bundle).exists() or "/" in bundle or "\\" in bundle:  # a path (one that is missing says so)
        b = Bundle.load(Path(bundle))
    else:
        from tandem.cli.registry import open_registry

        name, _, ref = bundle.partition(":")
        with open_registry() as reg:
            resolved = reg.resolve(name, ref or None, include_archived=True)  # inspecting is not serving
            stored = reg.get(name, resolved.version)
            lineage = reg.lineage(stored)
            b = Bundle.load(resolved.bundle_dir)
    if json_out:
        out = b.manifest.model_dump(mode="json")
        if stored is not None:
            out["stored"] = {"version": stored.version, "aliases": list(stored.aliases),
                             "pushed": stored.created.isoformat(), "manifest_sha256": stored.manifest_sha256,
                             "pushed_by": stored.pushed_by, "git_commit": lineage["git_commit"],
                             "git_dirty": lineage["git_dirty"],
                             "archived": stored.archived.isoformat() if stored.archived else None}
        print_json(out)
        return
    show_bundle(b)
    if stored is not None:
        by = f" by {stored.pushed_by}" if stored.pushed_by else ""
        code = ""
        if lineage["git_commit"]:
            code = f", trained by code at git commit {lineage['git_commit'][:12]}" + (
                " (with uncommitted changes)" if lineage["git_dirty"] else "")
        console.print(f"stored in the registry as {stored.name} version {stored.version}, pushed "
                      f"{stored.created:%Y-%m-%d %H:%M} UTC{by}{code}"
                      + (f"; aliases {', '.join(stored.aliases)}" if stored.aliases else ""), highlight=False, markup=False)
        if stored.archived is not None:
            console.print(f"archived {stored.archived:%Y-%m-%d %H:%M} UTC: not served, aliased or released; restore it "
                          f"with `tandem versions unarchive {stored.name} {stored.version}`", highlight=False, markup=False)


@app.command()
def predict(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by `tandem export`.")],
    images: Annotated[list[Path], typer.Argument(help="JPEG/PNG files.")],
    int8: Annotated[bool, typer.Option("--int8", help="Use the int8 model.")] = False,
    top_k: Annotated[int, typer.Option(min=1, help="How many labels to list for each image.")] = 5,
    # Read by the option itself rather than through Settings: pydantic-settings alone costs a sixth of
    # predict's start-up, and this is the one setting predict reads.
    threads: Annotated[int, typer.Option(min=0, envvar="TANDEM_ORT_THREADS", help="ONNX Runtime threads; 0: one per core.")] = 0,
    json_out: JsonOpt = False,
) -> None:
    """Classify images on this device with ONNX Runtime alone (no torch).

    Every readable image is answered; each one that is not is reported, and the exit status is then non-zero."""
    import time

    import numpy as np

    from tandem.apps.classify import Classify
    from tandem.bundle import Bundle
    from tandem.bundle.preprocess import decode_image, to_input
    from tandem.bundle.runtime import OnnxModel
    from tandem.errors import BundleError, ImageError

    folders = [p for p in images if p.is_dir()]
    if folders:
        raise ConfigError(f"{folders[0]} is a folder: predict takes image files; pass the photos in it, "
                          f"e.g. {folders[0] / '*.jpg'}")
    b = Bundle.load(bundle)
    not_classifier = Classify().unsupported(b.manifest)
    if not_classifier is not None:
        raise BundleError(f"{b.root}: {b.manifest.name} {not_classifier}")
    model = OnnxModel.open(b, "int8" if int8 else "fp32", threads=threads)
    good: list[tuple[Path, np.ndarray]] = []
    failed: list[tuple[Path, ImageError]] = []
    for path in images:
        try:
            good.append((path, to_input(decode_image(path), model.spec)))
        except ImageError as e:
            if len(images) == 1:
                raise
            failed.append((path, e))
    ms = 0.0
    guesses = []
    if good:
        t0 = time.perf_counter()
        probs = model.run(np.stack([pixels for _, pixels in good]))["probabilities"]
        ms = (time.perf_counter() - t0) * 1000
        guesses = model.top_k(probs, top_k)
    if json_out:
        print_json({"model": b.manifest.name, "precision": model.precision, "milliseconds": round(ms, 2),
                    "predictions": [{"image": str(p), "top": [g.__dict__ for g in gs]}
                                    for (p, _), gs in zip(good, guesses, strict=True)],
                    "errors": [{"image": str(p), "error": str(e)} for p, e in failed]})
    else:
        for (path, _), gs in zip(good, guesses, strict=True):
            console.print(str(path), style="bold", markup=False, highlight=False)
            for g in gs:
                console.print(f"  {g.probability:6.1%}  {g.label}", markup=False, highlight=False)
        if good:
            console.print(f"[dim]{len(good)} image(s), {model.precision}, {ms:.1f} ms[/]")
        for _, error in failed:
            err_console.print(f"skipped {error}", markup=False, highlight=False)
    if failed:
        raise ImageError(f"{len(failed)} of {len(images)} image(s) could not be read (listed above)")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where the demo's run and bundle go.")] = Path("tandem-demo"),
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning passes over the training photos.")] = 1,
    subset: Annotated[float, typer.Option(min=0.01, max=1.0, help="Train on this fraction of the demo's photo budget and "
                                               "enrol this fraction of the people: a quicker, less accurate look.")] = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """Fine-tune celebmatch's face embedding on LFW (about 3 minutes on 2 cores), export, enrol people it never
    saw and match their other photos."""
    from tandem.apps.celebmatch.demo import run_demo
    from tandem.cli.resume import stopped_demo

    if json_out:
        console.quiet = True
    try:
        summary = run_demo(out, epochs=epochs, subset=subset, console=console, data_home=get_settings().data_home)
    except KeyboardInterrupt:
        raise stopped_demo(out / "run") from None
    if json_out:
        print_json(summary)


# push, pack, models, versions (list, archive, unarchive, delete), alias, rollback, gc
registry_cli.register(app)
# run-training-job (hidden): what a managed training's Ray Job runs
training_job_cli.register(app)
serve_cli.register(app)
# release, releases, release-halt, release-rollback, pin, unpin
ota_cli.register(app)
# advise, split
advise_cli.register(app)


def main() -> None:
    try:
        app()
    except TandemError as e:
        # The message is text, not markup: "pip install 'tandem[serve]'" must keep its [serve].
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(e.exit_code)
