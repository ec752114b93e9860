"""One exception hierarchy. Each error carries the HTTP status it means, so the server
(a later layer) translates them in one place, and the CLI prints the message and exits non-zero."""

from __future__ import annotations


class TandemError(Exception):
    """Root of every error Tandem raises on purpose. The message says what was wrong and what to do."""

    status_code = 500
    exit_code = 1


class ConfigError(TandemError):
    """A setting is missing or points nowhere."""

    status_code = 500
    exit_code = 2


class DataError(TandemError):
    """A dataset cannot be used as given (missing, empty, one class, ...)."""

    status_code = 400
    exit_code = 3


class ImageError(DataError):
    """An image cannot be decoded or has a shape/mode the model cannot take."""

    status_code = 400


class NoFaceFound(ImageError):
    """The face finder saw no face in a photo."""

    status_code = 422


class CheckpointError(TandemError):
    """A checkpoint is missing, corrupt or from an incompatible run."""

    status_code = 400
    exit_code = 4


class BundleError(TandemError):
    """A bundle is missing a file, fails its hashes or has another schema version."""

    status_code = 400
    exit_code = 5


class ModelError(TandemError):
    """An ONNX model cannot be loaded or run."""

    status_code = 500
    exit_code = 6
