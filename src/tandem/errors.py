"""One exception hierarchy. Each error carries the HTTP status it means, so the server
(a later layer) translates them in one place, and the CLI prints the message and exits non-zero."""

from __future__ import annotations

import contextlib
import errno
import math
import re
import reprlib
from collections.abc import Callable, Mapping
from pathlib import Path


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
    """No face in a photo: the face finder saw none, or the landmark network none where it looked."""

    status_code = 422

    def with_skip(self, control: str) -> NoFaceFound:
        """This error as the surface at hand says it, ``control`` being that surface's way to skip finding
        the face (the CLI's ``--no-detect``, HTTP's ``?detect=false``): offered only where it would help."""
        return self


class NoFaceDetected(NoFaceFound):
    """The face finder saw no face. A photo that is already a cropped, aligned face need not be searched:
    the library's message does not say how (each surface has its own control, ``with_skip``)."""

    def with_skip(self, control: str) -> NoFaceFound:
        return NoFaceFound(f"{self} (or {control} for a photo that is already a cropped, aligned face)")


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


class InvalidRequest(TandemError):
    """A request (HTTP or CLI) is malformed: wrong tensor name, dtype, shape, JSON, header length..."""

    status_code = 400
    exit_code = 7


class NotFound(TandemError):
    """An unknown model, version, alias or key."""

    status_code = 404
    exit_code = 8


class Conflict(TandemError):
    """The request clashes with what is stored (e.g. a name taken by something else)."""

    status_code = 409
    exit_code = 9


class Unauthenticated(TandemError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401
    exit_code = 10


class Forbidden(TandemError):
    """A valid API key without the scope this route needs."""

    status_code = 403
    exit_code = 10


class PayloadTooLarge(TandemError):
    status_code = 413
    exit_code = 7


def whole_seconds(wait: float) -> int:
    """A wait as Retry-After carries it: whole seconds, rounded up (a client that retries on time
    finds a token), at least 1. Messages say the same number, so body and header agree."""
    return max(1, math.ceil(wait))


class RateLimited(TandemError):
    """Too many requests for this key; ``retry_after`` says when the bucket has a token again (in
    whole seconds, as Retry-After gives it)."""

    status_code = 429
    exit_code = 11

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = float(whole_seconds(retry_after))


class Unavailable(TandemError):
    """A dependency (database, model loading) is not there right now; try again shortly."""

    status_code = 503
    exit_code = 12

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StorageFull(Unavailable):
    """A write ran out of disk space (or quota). Whatever it was writing was not kept: free space and
    try again. On the server a 503, like any resource that is short for now."""

    exit_code = 17

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=60.0)


# ENOSPC: the disk is full; EDQUOT: the user's quota is; EFBIG: a file size limit (ulimit -f) was hit.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_storage_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _FULL


class RegistryError(TandemError):
    """The registry database or artifact store failed or is inconsistent."""

    status_code = 500
    exit_code = 13


class UnsupportedMediaType(TandemError):
    """A request body of a Content-Type (or Content-Encoding) the route does not take."""

    status_code = 415
    exit_code = 7


class RequestTimeout(TandemError):
    """The server did not finish a request within its time limit (TANDEM_REQUEST_TIMEOUT_S)."""

    status_code = 504
    exit_code = 12


class SignatureError(TandemError):
    """A manifest's signature, signing key or claims (device, version, sequence) are not acceptable."""

    status_code = 400
    exit_code = 14


class DecryptionError(TandemError):
    """An encrypted model file cannot be decrypted with the key given (wrong key, altered bytes)."""

    status_code = 400
    exit_code = 14


class ChecksumError(TandemError):
    """Downloaded or rebuilt bytes do not match the sha256/size they were promised with."""

    status_code = 400
    exit_code = 14


class PatchError(TandemError):
    """A delta patch is malformed, truncated, too large, or does not fit the file it is applied to."""

    status_code = 400
    exit_code = 14


class ServerUnreachable(Unavailable):
    """No answer from the server (offline, timeout, a cut connection), as opposed to a refusal."""

    exit_code = 12


class AnswerTooLarge(Unavailable):
    """A server's answer larger than any answer of its kind (a check, a key, a message), read no further:
    a broken or hostile server, or someone in between, cannot make a device hold gigabytes."""

    status_code = 502


class ConditionsNotMet(TandemError):
    """A download is needed, but the device's conditions (unmetered network, charging, idle) forbid it now."""

    status_code = 412
    exit_code = 15


class ClusterError(TandemError):
    """Ray is not installed or not reachable, or a run on it failed (`tandem train --workers`, `serve --ray`)."""

    status_code = 503
    exit_code = 16


# --- what an error message may show -----------------------------------------------------------

# ascii() leaves these as they are; in a message that a browser or a log viewer may render they
# could start markup, so they are written as the escapes a Python literal would accept.
_MARKUP = str.maketrans({"<": "\\x3c", ">": "\\x3e", "&": "\\x26"})
# One character of ascii()'s output: an escape is never cut in half.
_LITERAL_CHAR = re.compile(r"\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|\\U[0-9a-f]{8}|\\.|.", re.S)
_ELLIPSIS = "..."


def quoted(value: object, limit: int = 80) -> str:
    """``value`` (client input: a name, a header, a file name) as it may appear in an error message.

    Python's ``ascii()`` of it, so quotes, control characters and non-ASCII are escaped, with ``<``,
    ``>`` and ``&`` escaped too (``'\\x3cscript\\x3e'``), and at most ``limit`` characters: longer
    values end in ``...``. The result is still a Python literal of the (cut) value, and never markup.
    """
    cut = False
    if isinstance(value, str | bytes) and len(value) > limit:
        value, cut = value[:limit], True  # ascii() of a huge value costs; no more than this is shown
    try:
        text = ascii(value) if isinstance(value, str | bytes | int | float | bool | None) else _short_repr(value, limit)
    except ValueError:  # an int past the interpreter's limit on digits
        return "(a value too long to show)"
    text = text.translate(_MARKUP)
    if not cut and len(text) <= limit:
        return text
    out, n = [], 0
    for ch in _LITERAL_CHAR.findall(text):
        if n + len(ch) > limit - len(_ELLIPSIS):
            break
        out.append(ch)
        n += len(ch)
    return "".join(out) + _ELLIPSIS


def _short_repr(value: object, limit: int) -> str:
    r = reprlib.Repr()  # Python 3.11's takes no arguments
    r.maxlevel = 2
    r.maxtuple = r.maxlist = r.maxarray = r.maxdict = r.maxset = r.maxfrozenset = r.maxdeque = 4
    r.maxstring = r.maxlong = r.maxother = limit
    return r.repr(value).encode("ascii", "backslashreplace").decode("ascii")


def without_paths(message: str, places: Mapping[str, Path]) -> str:
    """``message`` with every path inside one of ``places`` (name → folder) replaced by ``NAME/…``.

    For messages that leave the machine (HTTP answers): "object … is missing from the artifact store
    at /home/ann/.tandem/objects" becomes "… at TANDEM_HOME/…". Such a message names the stored
    object by model, version or sha256; where it lies is the operator's business (the log has it).
    """
    roots: list[tuple[str, str]] = []
    for name, folder in places.items():
        forms = {str(folder)}
        with contextlib.suppress(OSError, RuntimeError):
            forms.add(str(Path(folder).resolve()))
        roots += [(form.rstrip("/"), name) for form in forms if form.rstrip("/")]
    for root, name in sorted(roots, key=lambda r: -len(r[0])):  # the innermost folder names a path
        shown = f"{name}/…"
        message = re.sub(re.escape(root) + r"(?![^/\s'\"(),;:])(?:/[^\s'\"(),;:]*)?", _verbatim(shown), message)
    return message


def _verbatim(text: str) -> Callable[[re.Match[str]], str]:
    """A ``re.sub`` replacement that puts ``text`` in as written (a string would expand its backslashes)."""
    return lambda _m: text
