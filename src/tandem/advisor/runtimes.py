"""The bytes a runtime library adds to an app, per platform: measured where this machine has the
library, else as published (with its source), else unknown.

What can be measured here:
- **web**: the onnxruntime-web WebAssembly module and its glue script that Tandem's browser app
  loads (the built app in ``tandem/webapp``, else ``web/node_modules/onnxruntime-web/dist``), raw and
  gzip-compressed (what a web server sends with ``Content-Encoding: gzip``);
- **linux**: the shared libraries of the Python wheels installed here (onnxruntime,
  ai-edge-litert, executorch), a proxy for a native Linux x86_64 app's: the same runtime code,
  built for a desktop CPU, without the Python bindings.

Android's AARs and iOS's frameworks are not on this machine: their figures are the ones published
by the projects (``PUBLISHED``), each with where it was published, and marked ``published``, never
``measured``. docs/advisor.md lists them.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

PLATFORMS: tuple[str, ...] = ("android", "ios", "web", "linux")
Basis = Literal["measured", "published", "built-in"]
# What runs each bundle format on each platform (None: no runtime Tandem knows of there).
RUNTIMES: dict[str, dict[str, str | None]] = {
    "android": {"onnx": "ONNX Runtime", "litert": "LiteRT", "executorch": "ExecuTorch", "coreml": None},
    "ios": {"onnx": "ONNX Runtime", "litert": "LiteRT", "executorch": "ExecuTorch", "coreml": "Core ML"},
    "web": {"onnx": "onnxruntime-web", "litert": None, "executorch": None, "coreml": None},
    "linux": {"onnx": "ONNX Runtime", "litert": "LiteRT", "executorch": "ExecuTorch", "coreml": None},
}


@dataclass(frozen=True)
class RuntimeLibrary:
    runtime: str
    platform: str
    bytes: int | None  # on the device (installed, uncompressed); None: not known
    basis: Basis | None  # None with bytes None
    what: str  # which files, which build
    source: str  # where the figure comes from
    compressed_bytes: int | None = None  # the download, where known (web: gzip)

    def to_dict(self) -> dict:
        return asdict(self)


_ORT_DOCS = ("ONNX Runtime's documentation, 'How to develop a mobile application with ONNX Runtime' "
             "(onnxruntime.ai/docs/tutorials/mobile), its table of library file sizes for ONNX Runtime 1.13.1 "
             "(taken out with the reduced 'mobile' packages in 2024, microsoft/onnxruntime#21605)")
_TFLITE_ISSUE = ("tensorflow/tensorflow#57196 (2022): measured by the issue's author with Android Studio's APK "
                 "Analyzer; a TensorFlow Lite maintainer answered that the docs' older '~1 MB' figure was outdated")

# Published sizes of what an app embeds, one ABI (arm64) where the source says so.
PUBLISHED: dict[tuple[str, str], RuntimeLibrary] = {
    ("android", "onnx"): RuntimeLibrary(
        "ONNX Runtime", "android", 12_200_000, "published",
        "libonnxruntime.so, arm64, onnxruntime-android 1.13.1 (every operator); its reduced package "
        "onnxruntime-mobile was 3.2 MB (discontinued in 1.19; a custom build with only the model's operators "
        "is the way now)", _ORT_DOCS),
    ("ios", "onnx"): RuntimeLibrary(
        "ONNX Runtime", "ios", 12_200_000, "published",
        "onnxruntime-c / onnxruntime-objc pod, a static framework: the docs give the Android arm64 size "
        "as 'a good estimate for iOS'", _ORT_DOCS),
    ("android", "litert"): RuntimeLibrary(
        "LiteRT", "android", 3_200_000, "published",
        "libtensorflowlite_jni.so, arm64, from TensorFlow Lite 2.9's AAR on Maven (1.2 MB compressed in the "
        "APK); a selective build with only MobileNet's operators is a 382,892-byte AAR "
        "(tensorflow.org/lite/guide/reduce_binary_size)", _TFLITE_ISSUE, compressed_bytes=1_200_000),
    ("ios", "litert"): RuntimeLibrary(
        "LiteRT", "ios", 3_000_000, "published",
        "TensorFlowLiteC framework, arm64: 'at least 3 MB'", _TFLITE_ISSUE),
    ("android", "executorch"): RuntimeLibrary(
        "ExecuTorch", "android", 10_400_000, "published",
        "executorch.aar with the XNNPACK backend (the AAR as downloaded, all its ABIs; with Vulkan too: "
        "13.2 MB); the core runtime without operators strips to 48,128 bytes (pytorch/executorch#4967)",
        "pytorch/executorch#13428 (Aug 2025), an ExecuTorch maintainer's build at commit cad1214"),
    ("ios", "coreml"): RuntimeLibrary(
        "Core ML", "ios", 0, "built-in", "Core ML is a framework of iOS (11 and later): the app adds none of it",
        "Apple's Core ML documentation (developer.apple.com/documentation/coreml)"),
}

# The Linux proxies: the runtime's own shared libraries in its wheel, not the Python bindings
# (onnxruntime's pybind module links the runtime in again; ai-edge-litert's pywrap library is its
# Python interpreter API; ExecuTorch's: the core, the XNNPACK backend, its threads and the optimized
# kernels for the operators XNNPACK does not take).
LINUX_WHEELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnx": ("onnxruntime", ("libonnxruntime.so",)),
    "litert": ("ai-edge-litert", ("libLiteRt.so",)),
    "executorch": ("executorch", ("libexecutorch.so", "libexecutorch_backend_xnnpack.so",
                                  "libexecutorch_threadpool.so", "libexecutorch_kernels_optimized.so")),
}
# What Tandem's browser app loads besides its own script (web/src/ort.js).
WEB_FILES = ("ort-wasm-simd-threaded", (".wasm", ".mjs"))


def wheel_libraries(package: str, names: Iterable[str],
                    files: Callable[[str], list | None] = metadata.files) -> list[Path]:
    """The installed files of ``package`` whose names start with one of ``names`` (versioned .so names too)."""
    try:
        listed = files(package) or []
    except metadata.PackageNotFoundError:
        return []
    wanted = tuple(names)
    found = [Path(str(f.locate())) for f in listed if f.name.startswith(wanted) and ".so" in f.name]
    return sorted(p for p in found if p.is_file())


def measure_linux(fmt: str) -> RuntimeLibrary | None:
    """The Linux proxy for ``fmt``'s runtime: the sizes of its wheel's libraries installed here."""
    package, names = LINUX_WHEELS[fmt]
    libs = wheel_libraries(package, names)
    if not libs:
        return None
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:  # pragma: no cover - found its files a moment ago
        version = "?"
    return RuntimeLibrary(
        RUNTIMES["linux"][fmt] or fmt, "linux", sum(p.stat().st_size for p in libs), "measured",
        f"{', '.join(p.name for p in libs)} from the {package} {version} wheel (Linux x86_64), a proxy for a "
        "native Linux app's", "measured on this machine")


def web_files(roots: Iterable[Path]) -> list[Path]:
    """onnxruntime-web's WebAssembly module and glue as the browser app ships them, from the first root that has them."""
    stem, suffixes = WEB_FILES
    for root in roots:
        if not root.is_dir():
            continue
        found = sorted(p for p in root.rglob(f"{stem}*") if p.suffix in suffixes and p.is_file())
        if any(p.suffix == ".wasm" for p in found):
            return found
    return []


def default_web_roots() -> list[Path]:
    """The built browser app (``tandem/webapp``, package data), then a source checkout's node_modules."""
    package = Path(__file__).resolve().parents[1]
    return [package / "webapp", package.parents[1] / "web" / "node_modules" / "onnxruntime-web" / "dist"]


def measure_web(roots: Iterable[Path] | None = None) -> RuntimeLibrary | None:
    files = web_files(default_web_roots() if roots is None else roots)
    if not files:
        return None
    raw = sum(p.stat().st_size for p in files)
    packed = sum(len(gzip.compress(p.read_bytes(), compresslevel=6)) for p in files)
    return RuntimeLibrary(
        "onnxruntime-web", "web", raw, "measured",
        f"{', '.join(p.name for p in files)} (the WebAssembly build Tandem's browser app loads; its JavaScript "
        "API is bundled into the app's own script and not counted)", f"measured on this machine in {files[0].parent}",
        compressed_bytes=packed)


def runtime_libraries(web_roots: Iterable[Path] | None = None) -> dict[str, dict[str, RuntimeLibrary | None]]:
    """platform → format → the runtime library's size (None: no runtime there, or no figure)."""
    web = measure_web(web_roots)
    out: dict[str, dict[str, RuntimeLibrary | None]] = {}
    for platform, formats in RUNTIMES.items():
        row: dict[str, RuntimeLibrary | None] = {}
        for fmt, name in formats.items():
            if name is None:
                row[fmt] = None
            elif platform == "web":
                row[fmt] = web
            elif platform == "linux":
                row[fmt] = measure_linux(fmt)
            else:
                row[fmt] = PUBLISHED.get((platform, fmt))
        out[platform] = row
    return out
