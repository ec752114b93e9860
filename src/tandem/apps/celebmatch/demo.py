"""`tandem demo`: the whole loop on LFW in a few minutes on a laptop-class CPU.

Fine-tune celebmatch's face embedding (dlib's face ResNet, trained on about three million faces,
with a margin loss on LFW's training people; validation on people it never trained on keeps the
pretrained network if fine-tuning does not beat it) on a budget of LFW photos, export the bundle,
then do what the app does with a selfie: enrol people the network never saw (LFW's held-out
verification people) from five photos each and match their other photos; photos of people who were
not enrolled should get "no close match".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from tandem.bundle import Bundle

# The budget (about 3 minutes on 2 cores): each photo is aligned once, then EPOCHS passes at about
# 16 ms a photo (150×150, forward and backward).
IMAGES = 1800
EPOCHS = 1
ENROL = 5


def _up_to_date(run_dir: Path, bundle_dir: Path) -> Bundle | None:
    """The bundle already exported from the run as it is now, as make decides: written after the run's last
    checkpoint, and whole (Bundle.load checks every file against its hash); None when it must be exported again."""
    from tandem.bundle import Bundle
    from tandem.errors import TandemError
    from tandem.training import checkpoint

    manifest = bundle_dir / "manifest.json"
    saved = [p.stat().st_mtime for p in (run_dir / checkpoint.BEST, run_dir / checkpoint.LAST) if p.exists()]
    if not saved or not manifest.exists() or manifest.stat().st_mtime <= max(saved):
        return None
    try:
        return Bundle.load(bundle_dir)
    except TandemError:
        return None


def run_demo(out: Path, epochs: int = EPOCHS, photos: int = 6, seed: int = 0, subset: float = 1.0,
             min_faces: int = 1, console: Console | None = None, data_home: Path | None = None) -> dict:
    """``console``: where the story is told (the CLI passes its own, quiet under --json). ``data_home``:
    where LFW is (TANDEM_DATA_HOME)."""
    from tandem.apps.celebmatch.gallery import build_face_gallery, enroll
    from tandem.apps.celebmatch.kit import FaceKit
    from tandem.apps.celebmatch.matcher import CelebMatcher, display_name
    from tandem.bundle import Bundle
    from tandem.bundle.runtime import OnnxModel
    from tandem.data.catalog import ImageCatalog
    from tandem.errors import NoFaceFound
    from tandem.export.exporter import ExportOptions, export_run
    from tandem.training import checkpoint
    from tandem.training.embed import FINE_TUNE_LR, train_embed
    from tandem.training.run import TrainConfig, load_run

    console = console or Console()
    t0 = time.perf_counter()
    run_dir, bundle_dir = out / "run", out / "bundle"
    # ``subset``: a smaller photo budget for a quicker look (the tests use it).
    cfg = TrainConfig(data="lfw", out=run_dir, name="celebmatch", min_faces=min_faces, epochs=epochs, seed=seed,
                      objective="embed", backbone="dlib", align_size=150, lr=FINE_TUNE_LR, region_views=0.2,
                      max_images=max(64, round(IMAGES * subset)))
    resume = (run_dir / checkpoint.LAST).exists()
    console.rule("[bold]1. train[/] a face embedding on LFW (fine-tuning dlib's face ResNet)")
    if resume:
        console.print(f"continuing the run in {run_dir}")
    result = train_embed(cfg, resume=resume, show_progress=not console.quiet, data_home=data_home)
    kept = "the pretrained network: fine-tuning did not beat it" if result.best_epoch == 0 else f"epoch {result.best_epoch}"
    console.print(f"{result.train_images} photos of {result.classes} people; verification of unseen validation "
                  f"people {result.best_val_acc:.3f} ({kept})")

    console.rule("[bold]2. export[/] fp32 + int8 ONNX, landmark network, calibration")
    kept_bundle = _up_to_date(run_dir, bundle_dir)
    if kept_bundle is not None:
        bundle = kept_bundle
        console.print(f"{bundle_dir} was exported from the run as it is now: kept (delete it to export again)")
    else:
        with console.status("exporting, quantizing and calibrating…"):
            bundle = export_run(run_dir, bundle_dir, ExportOptions(name="celebmatch"), data_home)
    m = bundle.manifest.metrics
    console.print(f"LFW pairs of unseen people (folds 9–10): verification fp32 {m.get('lfw_verif_acc_fp32', float('nan')):.3f}, "
                  f"int8 {m.get('lfw_verif_acc_int8', float('nan')):.3f}; max |onnx − torch| {m['max_abs_onnx_torch']:.1e}")

    console.rule(f"[bold]3. enrol[/] people the network never saw, {ENROL} photos each")
    _, data = load_run(run_dir, data_home)
    test = data.part("test")
    per: dict[int, list] = {}
    for r in test.records:
        per.setdefault(r.label, []).append(r)
    people = sorted((c for c, rs in per.items() if len(rs) > ENROL), key=lambda c: test.classes[c])
    strangers = sorted((c for c, rs in per.items() if len(rs) <= ENROL), key=lambda c: test.classes[c])
    if subset < 1:
        people = people[: max(4, round(len(people) * subset))]
    enrol_records = [r for c in people for r in per[c][:ENROL]]
    catalog = ImageCatalog(test.root, test.classes, enrol_records, test.crop, test.source)
    kit = FaceKit.of(bundle)
    assert kit is not None
    gallery = build_face_gallery(OnnxModel.open(bundle), kit, catalog)
    bundle = enroll(bundle, gallery, source=f"lfw people never trained on, {ENROL} photos each")
    console.print(f"{len(gallery.names)} people enrolled into {bundle_dir}/gallery.npz; "
                  f"no-match threshold {gallery.threshold:.3f} (1% of strangers pass)")

    console.rule("[bold]4. match[/] their other photos, and strangers (faces found by OpenCV's Haar cascade)")
    matcher = CelebMatcher(Bundle.load(bundle_dir))
    table = Table(show_edge=False)
    for col in ("photo", "answer", "right?"):
        table.add_column(col)
    hits = tried = answered_right = strangers_rejected = strangers_tried = 0
    matches: list[dict[str, Any]] = []
    queries = [(r, True) for c in people for r in per[c][ENROL:]]
    queries += [(per[c][0], False) for c in strangers[: max(photos, len(people))]]
    for rec, enrolled in queries:
        truth = test.classes[rec.label]
        try:
            res = matcher.match(rec.path)
        except NoFaceFound:
            continue
        if enrolled:
            tried += 1
            ok = res.top[0].name == truth
            hits += ok
            answered_right += ok and not res.no_match
        else:
            strangers_tried += 1
            ok = res.no_match
            strangers_rejected += ok
        shown = sum(1 for x in matches if x["enrolled"] == enrolled)
        if shown < photos // 2 + (photos % 2 if enrolled else 0):
            expect = display_name(truth) if enrolled else "no close match (not enrolled)"
            table.add_row(rec.path.name, res.sentence, "[green]yes[/]" if ok else f"[red]no[/] ({expect})")
            matches.append({"photo": str(rec.path), "truth": truth, "enrolled": enrolled, "correct": ok,
                            **res.to_json()})
    console.print(table)
    elapsed = time.perf_counter() - t0
    console.rule("[bold]done[/]")
    console.print(f"{hits}/{tried} photos of enrolled people found the right person ({answered_right} also above "
                  f"the no-match threshold); {strangers_rejected}/{strangers_tried} strangers got no close match; "
                  f"{elapsed:.0f}s in all")
    console.print(f"run folder:  {run_dir}  (curves.png, checkpoints)")
    console.print(f"bundle:      {bundle_dir}  (try: tandem info {bundle_dir}; "
                  f"tandem celebmatch match {bundle_dir} PHOTO.jpg)")
    return {"seconds": round(elapsed, 1), "matched": hits, "tried": tried, "strangers_rejected": strangers_rejected,
            "strangers_tried": strangers_tried, "enrolled_people": len(gallery.names), "run": str(run_dir),
            "bundle": str(bundle_dir), "metrics": bundle.manifest.metrics, "matches": matches}
