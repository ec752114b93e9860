"""`tandem celebmatch enroll|match`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tandem.cli.output import console, err_console, get_settings, print_json
from tandem.errors import ConfigError

app = typer.Typer(help="Which celebrity do you look like — and whose eyes do you have?", no_args_is_help=True)


@app.command()
def enroll(
    bundle: Annotated[Path, typer.Argument(help="A face-embedding bundle folder written by `tandem export`.")],
    data: Annotated[str, typer.Option(help="A folder with one sub-folder per identity, or 'lfw'.")] = "lfw",
    min_faces: Annotated[int | None, typer.Option(help="Enrol identities with at least this many images (default: 20 for lfw, 1 for a folder).")] = None,
    max_per_identity: Annotated[int | None, typer.Option(help="Use at most this many images per identity.")] = None,
    detect: Annotated[bool | None, typer.Option("--detect/--no-detect", help="Find faces first (default: yes for folders, no for aligned LFW).")] = None,
    index_above: Annotated[int, typer.Option(min=0, help="Face-embedding bundles: search galleries of more identities than this through an approximate index (needs tandem\\[ann]).")] = 20_000,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Build the gallery (mean embedding per identity) and store it in the bundle."""
    from rich.progress import Progress

    from tandem.apps.celebmatch.gallery import build_face_gallery, build_gallery
    from tandem.apps.celebmatch.gallery import enroll as store
    from tandem.apps.celebmatch.kit import FaceKit
    from tandem.bundle import Bundle
    from tandem.bundle.runtime import OnnxModel
    from tandem.data import load_catalog
    from tandem.data.resolve import default_min_faces
    from tandem.faces.finder import FaceFinder

    b = Bundle.load(bundle)
    min_faces = default_min_faces(data, min_faces)
    catalog = load_catalog(data, min_faces, get_settings().data_home)
    use_detect = (data != "lfw") if detect is None else detect
    finder = FaceFinder() if use_detect else None
    if min_faces < 1:
        raise ConfigError(f"--min-faces must be at least 1, got {min_faces}")

    def boxes(img):
        faces = finder.find(img)
        return faces[0].crop_window() if faces else None

    model = OnnxModel.open(b, threads=get_settings().ort_threads)
    kit = FaceKit.of(b)
    with Progress(console=console, disable=json_out) as progress:
        if kit is not None:
            task = progress.add_task("aligning and enrolling faces", total=len(catalog.records))
            gallery = build_face_gallery(model, kit, catalog, max_per_identity, lambda n: progress.advance(task, n),
                                         detect=use_detect, ann_above=index_above)
        else:
            task = progress.add_task("enrolling", total=len(catalog.classes))
            gallery = build_gallery(model, catalog, boxes if finder else None, max_per_identity,
                                    lambda n: progress.advance(task, n))
    b = store(b, gallery, source=f"{catalog.source} min_faces={min_faces}")
    summary = {"bundle": str(b.root), "identities": len(gallery.names), "images": int(gallery.counts.sum())}
    if json_out:
        print_json(summary)
    else:
        console.print(f"enrolled {summary['identities']} identities from {summary['images']} images into {b.root}")


@app.command()
def match(
    bundle: Annotated[Path, typer.Argument(help="A face-embedding bundle folder written by `tandem export`.")],
    photos: Annotated[list[Path], typer.Argument(help="JPEG/PNG photos with a face, or folders of them (searched recursively).")],
    detect: Annotated[bool, typer.Option("--detect/--no-detect", help="Find the face first; --no-detect for LFW-style photos (the face where LFW puts it).")] = True,
    int8: Annotated[bool, typer.Option("--int8", help="Run the int8 model.")] = False,
    top_k: Annotated[int, typer.Option(min=1, max=100, help="How many identities to list.")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per photo, one per line.")] = False,
) -> None:
    """Say which enrolled identity each photo looks like, overall and for eyes, nose and mouth."""
    import json

    from tandem.apps.celebmatch.matcher import CelebMatcher, display_name
    from tandem.bundle import Bundle
    from tandem.errors import NoFaceFound, TandemError

    files = photo_files(photos)
    matcher = CelebMatcher(Bundle.load(bundle), "int8" if int8 else "fp32")
    answered, last_error = 0, None
    for path in files:
        try:
            result = matcher.match(path, detect=detect, top_k=top_k)
        except TandemError as caught:
            e = caught.with_skip("--no-detect") if isinstance(caught, NoFaceFound) else caught
            if len(files) == 1:
                if e is caught:
                    raise
                raise e from caught
            last_error = e
            if json_out:
                print(json.dumps({"photo": str(path), "error": str(e), "no_face": isinstance(e, NoFaceFound)}),
                      flush=True)
            else:
                err_console.print(f"{path}: {e}", markup=False, highlight=False)
            continue
        answered += 1
        if json_out:
            print(json.dumps({"photo": str(path), **result.to_json()}), flush=True)
            continue
        if len(files) > 1:
            console.print(f"[dim]{escape(str(path))}[/]")
        console.print(f"[bold]{result.sentence}[/]")
        for i, t in enumerate(result.top, 1):
            console.print(f"  {i}. {display_name(t.name):30s} {t.percent:3d}%")
        for part, lk in result.parts.items():
            console.print(f"  {part:6s} {display_name(lk.name):30s} {lk.percent:3d}%")
    if answered == 0 and last_error is not None:
        raise last_error


def photo_files(paths: list[Path]) -> list[Path]:
    """The photos named, folders expanded to their image files (sorted); a missing path is an error."""
    from tandem.data.catalog import IMAGE_SUFFIXES

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"{p}: no photos in this folder (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"{p}: no such photo or folder")
    return files
