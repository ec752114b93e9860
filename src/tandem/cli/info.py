"""`tandem info`: a bundle's manifest as a person reads it."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tandem.apps.registry import Apps, builtin
from tandem.bundle import Bundle, Manifest
from tandem.cli.output import console, table


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _brief(value: object) -> str:
    """An app setting in a few words: nested objects (alignment, calibration curves) by their keys."""
    if isinstance(value, dict):
        return "{" + ", ".join(str(k) for k in value) + "}"
    if isinstance(value, list) and len(value) > 6:
        return f"[{len(value)} values]"
    return str(value)


def _dims(shape: list[int]) -> str:
    """A tensor's shape for people: the dynamic batch N, an image's dynamic height and width H and W."""
    names = ("N", "H", "W")
    return "×".join((names[i] if i < 3 else "?") if d < 0 else str(d) for i, d in enumerate(shape))


def show_apps(m: Manifest, apps: Apps) -> None:
    """Which of the registered apps the bundle serves on the server's image endpoint, and why not the others."""
    serving = apps.serving(m)
    if serving:
        console.print(f"image apps: {', '.join(a.name for a in serving)} (POST /v1/apps/APP/{m.name}:predict)",
                      markup=False, highlight=False)
    for app in apps:
        reason = app.unsupported(m)
        if reason is not None:
            console.print(f"not {app.name}: {m.name} {reason}", style="dim", markup=False, highlight=False)


def show_bundle(b: Bundle, apps: Apps | None = None) -> None:
    """``apps``: those to say the bundle serves or not; default: Tandem's own."""
    m = b.manifest
    console.print(f"[bold]{m.name}[/]  version {m.version if m.version is not None else '(not pushed)'}  "
                  f"schema {m.schema_version}  created {m.created:%Y-%m-%d %H:%M} UTC  [green]verified[/]")
    # Below, a bundle's words (labels are folder names, file and tensor names whatever wrote it) are data,
    # never markup: "[/]" in one would stop `tandem info` with a markup error.
    if m.labels:
        console.print(f"task {m.task}; {len(m.labels)} labels: {', '.join(m.labels[:6])}{' …' if len(m.labels) > 6 else ''}",
                      markup=False, highlight=False)
    else:
        console.print(f"task {m.task}", markup=False, highlight=False)
    io = table("", "name", "dtype", "shape", title="tensors")
    for kind, specs in (("input", m.inputs), ("output", m.outputs)):
        for t in specs:
            io.add_row(kind, Text(t.name), Text(t.dtype), _dims(t.shape))
    console.print(io)
    p = m.preprocessing
    crop = p.crop.mode if p.crop.box is None else f"box {tuple(round(v, 3) for v in p.crop.box)}"
    # An image-to-image model takes a photo at any size: height×width is the size it learned at.
    resize = (f"any size (trained at {p.height}×{p.width})" if m.task == "image-to-image"
              else f"resize {p.height}×{p.width} {p.interpolation}")
    console.print(f"preprocessing: decode → {p.color}, crop {crop}, {resize}, "
                  f"{p.dtype} {p.layout}; in graph: /255, mean {tuple(round(v, 3) for v in p.normalize_in_graph.mean)}, "
                  f"std {tuple(round(v, 3) for v in p.normalize_in_graph.std)}")
    if m.metrics:
        mt = Table(title="metrics measured at export", show_edge=False)
        mt.add_column("metric")
        mt.add_column("value", justify="right")
        for k, v in m.metrics.items():
            mt.add_row(Text(k), f"{v:.4g}" if isinstance(v, float) else Text(str(v)))
        console.print(mt)
    if m.variants:
        vt = table("variant", "file", "runtime", "max |Δ| vs torch", "top-1 agreement / PSNR", "photos",
                   title="variants, each checked against PyTorch at export")
        for key, variant in m.variants.items():
            parity, runtime = variant.parity, escape(f"{variant.runtime.name} {variant.runtime.version}")
            if parity is None:  # Core ML: its spec was checked, its outputs cannot be measured off Apple's systems
                ops = variant.spec_check.ops if variant.spec_check else 0
                # A bundle's words are data, never markup.
                vt.add_row(escape(key), escape(variant.file), runtime, "not run: spec checked", "", f"{ops} ops")
                continue
            agree = ""  # a classifier's top-1 agreement, or a picture's PSNR
            if parity.top1_agreement is not None:
                agree = f"{parity.top1_agreement:.0%}"
            elif parity.psnr_db is not None:
                agree = f"{parity.psnr_db:.1f} dB"
            vt.add_row(escape(key), escape(variant.file), runtime, f"{parity.max_abs:.2g}", agree,
                       f"{parity.images} {parity.on}")
        console.print(vt)
    ft = table("file", "size", "sha256", title="files")
    for rel, e in m.files.items():
        ft.add_row(Text(rel), _fmt_bytes(e.size), e.sha256[:16] + "…")
    console.print(ft)
    for app, spec in m.apps.items():
        # A bundle's words are data, never markup (a style picture's name could hold "[...]").
        console.print(f"app [bold]{escape(app)}[/]: " + ", ".join(f"{escape(k)}={escape(_brief(v))}"
                                                             for k, v in spec.items() if k != "regions"))
    for s in m.splits:
        shape = "×".join("N" if d < 0 else str(d) for d in s.tensor.shape)
        console.print(f"split k={s.k}: {s.head} (device) → {s.tensor.name} {s.tensor.dtype} {shape} → {s.tail} (server)",
                      markup=False, highlight=False)
    show_apps(m, apps or Apps(builtin()))
