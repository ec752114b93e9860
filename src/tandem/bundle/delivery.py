"""Which of a bundle's files a device is sent, by the variant it runs: read from the manifest alone, so the
registry's OTA (registry/ota/objects.py) and the advisor's update sizes (advisor/updates.py) share one rule."""

from __future__ import annotations

from tandem.bundle.manifest import Manifest


def available(manifest: Manifest) -> dict[str, str]:
    """Every variant of a bundle by key, to its file: the ONNX models of ``models``, then ``variants``."""
    out = {f"onnx-{p}": f for p, f in manifest.models.items()}
    out.update((key, v.file) for key, v in manifest.variants.items())
    return out


def app_files(manifest: Manifest) -> list[str]:
    """Bundle files the manifest's apps name (e.g. the celebmatch gallery): a device needs them
    whatever precision it runs."""
    named = {v for app in manifest.apps.values() for v in app.values() if isinstance(v, str)}
    return sorted(rel for rel in named if rel in manifest.files and rel not in manifest.models.values())


def split_heads(manifest: Manifest) -> list[str]:
    """The heads of the bundle's splits (``tandem export --split``): a device runs them for ``split@K``,
    so a bundle exported with splits ships them, whatever precision the device runs."""
    return sorted({s.head for s in manifest.splits})


def device_files(manifest: Manifest, variant: str) -> list[str]:
    """What a device running ``variant`` (a key of ``available``) is sent besides the manifest: that model
    first, the app files, and with an ONNX model the split heads (ONNX files too: a device running another
    runtime is not assumed to run them)."""
    model = available(manifest)[variant]
    heads = split_heads(manifest) if variant.partition("-")[0] == "onnx" else []
    return list(dict.fromkeys([model, *app_files(manifest), *heads]))


def delta_kind(path: str) -> str:
    """What the delta library calls the file: ONNX models get tensor-level patches."""
    return "onnx" if path.endswith(".onnx") else "bytes"
