"""`tandem celebmatch enroll|match`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tandem.cli.output import console, print_json

app = typer.Typer(help="Which celebrity do you look like — and whose eyes do you have?", no_args_is_help=True)


@app.command()
def enroll(
    bundle: Annotated[Path, typer.Argument()],
    data: Annotated[str, typer.Option(help="A folder with one sub-folder per identity, or 'lfw'.")] = "lfw",
    min_faces: Annotated[int | None, typer.Option(help="Enrol identities with at least this many images (default: 20 for lfw, 1 for a folder).")] = None,
    max_per_identity: Annotated[int | None, typer.Option(help="Use at most this many images per identity.")] = None,
    detect: Annotated[bool | None, typer.Option("--detect/--no-detect", help="Find faces first (default: yes for folders, no for aligned LFW).")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Build the gallery (mean embedding per identity) and store it in the bundle."""
    from rich.progress import Progress

    from tandem.apps.celebmatch.gallery import build_gallery
    from tandem.apps.celebmatch.gallery import enroll as store
    from tandem.bundle import Bundle
    from tandem.data import load_catalog
    from tandem.data.resolve import default_min_faces
    from tandem.faces.finder import FaceFinder
    from tandem.runtime import OnnxModel

    b = Bundle.load(bundle)
    min_faces = default_min_faces(data, min_faces)
    catalog = load_catalog(data, min_faces)
    use_detect = (data != "lfw") if detect is None else detect
    finder = FaceFinder() if use_detect else None

    def boxes(img):  # type: ignore[no-untyped-def]
        faces = finder.find(img)  # type: ignore[union-attr]
        return faces[0].crop_window() if faces else None

    with Progress(console=console, disable=json_out) as progress:
        task = progress.add_task("enrolling", total=len(catalog.classes))
        gallery = build_gallery(OnnxModel.open(b), catalog, boxes if finder else None, max_per_identity,
                                lambda n: progress.advance(task, n))
    b = store(b, gallery, source=f"{catalog.source} min_faces={min_faces}")
    summary = {"bundle": str(b.root), "identities": len(gallery.names), "images": int(gallery.counts.sum())}
    if json_out:
        print_json(summary)
    else:
        console.print(f"enrolled {summary['identities']} identities from {summary['images']} images into {b.root}")


@app.command()
def match(
    bundle: Annotated[Path, typer.Argument()],
    photo: Annotated[Path, typer.Argument(help="A JPEG/PNG photo with a face.")],
    detect: Annotated[bool, typer.Option("--detect/--no-detect", help="Find the face first; --no-detect for aligned LFW-style crops.")] = True,
    int8: Annotated[bool, typer.Option("--int8")] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Say which enrolled identity a photo looks like, overall and for eyes, nose and mouth."""
    from tandem.apps.celebmatch.matcher import CelebMatcher, display_name
    from tandem.bundle import Bundle

    result = CelebMatcher(Bundle.load(bundle), "int8" if int8 else "fp32").match(photo, detect=detect)
    if json_out:
        print_json(result.to_json())
        return
    console.print(f"[bold]{result.sentence}[/]")
    for i, t in enumerate(result.top, 1):
        console.print(f"  {i}. {display_name(t.name):30s} {t.percent:3d}%")
    for part, lk in result.parts.items():
        console.print(f"  {part:6s} {display_name(lk.name):30s} {lk.percent:3d}%")
