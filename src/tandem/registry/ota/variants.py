"""Which model file of a version a device is sent: its variants, the runtime a device asks for, and what a
release restricts (docs/ota.md, "Variants").

A variant is one model file in one format and precision, keyed ``FORMAT-PRECISION`` (``onnx-fp32``,
``litert-int8``, ``coreml-fp16``: tandem.bundle's ``variants``). Every bundle has at least ``onnx-fp32``: a
bundle without ``variants`` (schema 2) has its ONNX models, named by ``models``. Pure functions: the server
calls them per check, the registry when a release is made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import get_args

from tandem.bundle import Manifest
from tandem.bundle.delivery import available
from tandem.bundle.manifest import Format, VariantPrecision
from tandem.errors import InvalidRequest, quoted

DEFAULT_RUNTIME = "onnx"  # what a check that names no runtime gets: the ONNX model, as before variants
# The runtimes a device may ask for are the bundle's formats: a format the bundle format learns is asked for too.
RUNTIMES: tuple[str, ...] = get_args(Format)
PRECISIONS: tuple[str, ...] = get_args(VariantPrecision)
# Where each runtime runs, for the platforms Tandem knows. A runtime not listed runs everywhere; onnx does
# (ONNX Runtime Mobile, onnxruntime-web, the Python SDK), so a check for onnx takes any platform name.
PLATFORMS = ("android", "ios", "linux", "macos", "web", "windows")
RUNS_ON: dict[str, tuple[str, ...]] = {
    "litert": ("android", "ios", "linux", "macos", "web", "windows"),  # LiteRT, LiteRT.js on the web
    "executorch": ("android", "ios", "linux", "macos"),
    "coreml": ("ios", "macos"),
}
KEY_RE = re.compile(r"^(?P<format>[a-z][a-z0-9]{0,31})(?:-(?P<precision>[a-z0-9]{1,16}))?$")


def runtime_of(key: str) -> str:
    return key.partition("-")[0]


def precision_of(key: str) -> str:
    return key.partition("-")[2]


def allowed(variants: Mapping[str, str], restriction: Iterable[str]) -> dict[str, str]:
    """The variants a release offers: all, or (``restriction`` not empty) those it names, by key or by
    format (``litert``: every LiteRT precision)."""
    names = set(restriction)
    if not names:
        return dict(variants)
    return {k: f for k, f in variants.items() if k in names or runtime_of(k) in names}


def choose(variants: Iterable[str], runtime: str, precision: str) -> str | None:
    """The variant of ``runtime`` a device that prefers ``precision`` gets: that precision, else the most
    accurate the runtime has (fp32, then fp16, then int8), as an int8 device gets fp32 from a bundle without
    int8; None when the runtime has none."""
    have = set(variants)
    for p in (precision, *(q for q in PRECISIONS if q != precision)):
        key = f"{runtime}-{p}"
        if key in have:
            return key
    return None


def check_runtime(runtime: object) -> str:
    if not isinstance(runtime, str) or runtime not in RUNTIMES:
        raise InvalidRequest(f"'runtime' must be one of {', '.join(RUNTIMES)}, not {quoted(runtime, 40)} "
                             "(the runtime the app runs models with; docs/ota.md)")
    return runtime


def check_precision(precision: object) -> str:
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise InvalidRequest(f"'precision' must be one of {', '.join(PRECISIONS)}, not {quoted(precision, 40)}")
    return precision


def check_platform_runs(platform: str | None, runtime: str) -> None:
    """A runtime other than onnx needs a platform Tandem knows, on which it runs (no platform: not judged)."""
    where = RUNS_ON.get(runtime)
    if platform is None or where is None:
        return
    if platform not in PLATFORMS:
        raise InvalidRequest(f"'platform' {quoted(platform, 40)} is not one Tandem knows, so it cannot say whether "
                             f"{runtime} runs there: with 'runtime' {runtime!r}, send a platform of "
                             f"{', '.join(PLATFORMS)}")
    if platform not in where:
        here = [r for r in RUNTIMES if platform in RUNS_ON.get(r, PLATFORMS)]
        raise InvalidRequest(f"{runtime} does not run on {platform} (it runs on {', '.join(where)}); runtimes for "
                             f"{platform}: {', '.join(here)}")


def check_restriction(entries: Iterable[str]) -> list[str]:
    """A release's ``--variants``, checked: each a format (``onnx``) or a variant key (``litert-int8``) of a
    format Tandem knows; sorted, without repeats."""
    out: set[str] = set()
    for raw in entries:
        entry = raw.strip().lower() if isinstance(raw, str) else raw
        m = KEY_RE.fullmatch(entry) if isinstance(entry, str) else None
        if m is None or m.group("format") not in RUNTIMES or (m.group("precision") not in (None, *PRECISIONS)):
            raise InvalidRequest(f"variant {quoted(raw, 40)} is neither a format ({', '.join(RUNTIMES)}) nor a variant "
                                 f"key FORMAT-PRECISION with precision {', '.join(PRECISIONS)} (e.g. onnx, "
                                 "litert-int8)")
        out.add(entry)
    return sorted(out)


def check_offers(manifest: Manifest, restriction: Iterable[str]) -> None:
    """Each entry of a restriction names a variant the version has (a typo would hold back what it meant to
    offer)."""
    have = available(manifest)
    missing = [e for e in restriction if not allowed(have, [e])]
    if missing:
        raise InvalidRequest(f"{manifest.name} v{manifest.version} has no variant {', '.join(missing)} (it has "
                             f"{', '.join(sorted(have))}); name variants it has, or export them "
                             "(`tandem export --formats …`) and push a new version")
