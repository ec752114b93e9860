"""The bundle format and what reads it: a folder holding a model in open formats plus its manifest.

``manifest`` is the format itself (docs/bundle.md: manifest, schema, file checks, loading and
writing a bundle); its names are re-exported here, so ``from tandem.bundle import Bundle`` is the
way in. Beside it: ``archive`` (.tandem files), ``preprocess`` (a photo into the model's pixels, the
same on server and device) and ``runtime`` (a bundle's model run by ONNX Runtime). Those three are
imported by name, so loading a manifest does not load ONNX Runtime.
"""

from tandem.bundle.manifest import (
    MANIFEST,
    MAX_PATH_CHARS,
    NAME_PATTERN,
    NAME_RE,
    READABLE_SCHEMAS,
    SCHEMA_VERSION,
    UNHASHED,
    VARIANTS_SCHEMA,
    Bundle,
    FileEntry,
    Fingerprint,
    Format,
    Manifest,
    Parity,
    Precision,
    Software,
    SpecCheck,
    SplitSpec,
    Task,
    TensorSpec,
    Variant,
    VariantPrecision,
    check_paths,
    editing,
    file_entry,
    normal_path,
    parse_tail_name,
    sha256_file,
    tail_name,
    write_manifest,
)

__all__ = [
    "MANIFEST",
    "MAX_PATH_CHARS",
    "NAME_PATTERN",
    "NAME_RE",
    "READABLE_SCHEMAS",
    "SCHEMA_VERSION",
    "UNHASHED",
    "VARIANTS_SCHEMA",
    "Bundle",
    "FileEntry",
    "Fingerprint",
    "Format",
    "Manifest",
    "Parity",
    "Precision",
    "Software",
    "SpecCheck",
    "SplitSpec",
    "Task",
    "TensorSpec",
    "Variant",
    "VariantPrecision",
    "check_paths",
    "editing",
    "file_entry",
    "normal_path",
    "parse_tail_name",
    "sha256_file",
    "tail_name",
    "write_manifest",
]
