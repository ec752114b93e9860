"""`tandem demo`: the whole loop on LFW in a few minutes on a laptop-class CPU.

Train celebmatch on the 47 people with at least 20 photos, export the bundle, enrol the
identities from their training photos, then match held-out test photos found by the face finder.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from tandem.cli.output import console


def run_demo(out: Path, epochs: int = 20, photos: int = 6, seed: int = 0, subset: float = 1.0) -> dict:
    from tandem.apps.celebmatch.gallery import build_gallery, enroll
    from tandem.apps.celebmatch.matcher import CelebMatcher, display_name
    from tandem.bundle import Bundle
    from tandem.errors import NoFaceFound
    from tandem.export.exporter import ExportOptions, export_run
    from tandem.runtime import OnnxModel
    from tandem.training import checkpoint
    from tandem.training.run import TrainConfig, load_run
    from tandem.training.trainer import train

    t0 = time.perf_counter()
    run_dir, bundle_dir = out / "run", out / "bundle"
    # A stride-2 stem does 3.7× less work, so the demo fits in minutes; `make bench-accuracy`
    # trains the full-resolution network that reaches the accuracy targets.
    # ``subset``: a stratified fraction of every person's photos, for a quicker look (the tests use it).
    cfg = TrainConfig(data="lfw", out=run_dir, name="celebmatch", min_faces=20, epochs=epochs, seed=seed, stem_stride=2,
                      subset=subset)
    resume = (run_dir / checkpoint.LAST).exists()
    console.rule("[bold]1. train[/] celebmatch on LFW (people with ≥ 20 photos)")
    if resume:
        console.print(f"continuing the run in {run_dir}")
    result = train(cfg, resume=resume, show_progress=not console.quiet)
    console.print(f"best validation top-1 {result.best_val_acc:.3f} after {result.epochs} epochs")

    console.rule("[bold]2. export[/] fp32 + int8 ONNX bundle")
    with console.status("exporting and quantizing…"):
        bundle = export_run(run_dir, bundle_dir, ExportOptions(name="celebmatch"))
    m = bundle.manifest.metrics
    console.print(f"test top-1 fp32 {m.get('test_top1_fp32', float('nan')):.3f}, int8 {m.get('test_top1_int8', float('nan')):.3f}; "
                  f"max |onnx − torch| {m['max_abs_onnx_torch']:.1e}")

    console.rule("[bold]3. enrol[/] identities from their training photos")
    _, data = load_run(run_dir)
    gallery = build_gallery(OnnxModel.open(bundle), data.part("train"))
    bundle = enroll(bundle, gallery, source="lfw train split, min_faces=20")
    console.print(f"{len(gallery.names)} identities enrolled into {bundle_dir}/gallery.npz")

    console.rule("[bold]4. match[/] held-out photos (face found by OpenCV's Haar cascade)")
    matcher = CelebMatcher(Bundle.load(bundle_dir))
    test = data.part("test")
    seen: set[int] = set()
    table = Table(show_edge=False)
    for col in ("photo", "answer", "right?"):
        table.add_column(col)
    hits = tried = 0
    matches = []
    for rec in test.records:
        if rec.label in seen or tried >= photos:
            continue
        seen.add(rec.label)
        truth = test.classes[rec.label]
        try:
            res = matcher.match(rec.path)
        except NoFaceFound:
            table.add_row(rec.path.name, "no face found", "—")
            continue
        tried += 1
        ok = res.top[0].name == truth
        hits += ok
        table.add_row(rec.path.name, res.sentence, "[green]yes[/]" if ok else f"[red]no[/] ({display_name(truth)})")
        matches.append({"photo": str(rec.path), "truth": truth, "correct": ok, **res.to_json()})
    console.print(table)
    elapsed = time.perf_counter() - t0
    console.rule("[bold]done[/]")
    console.print(f"{hits}/{tried} held-out photos matched the right person; {elapsed:.0f}s in all")
    console.print(f"run folder:  {run_dir}  (curves.png, confusion.png, checkpoints)")
    console.print(f"bundle:      {bundle_dir}  (try: tandem info {bundle_dir}; "
                  f"tandem celebmatch match {bundle_dir} PHOTO.jpg)")
    return {"seconds": round(elapsed, 1), "matched": hits, "tried": tried, "run": str(run_dir),
            "bundle": str(bundle_dir), "metrics": bundle.manifest.metrics, "matches": matches}
