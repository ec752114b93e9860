"""Celebrity match: "You look 85% like George W Bush — but you have Colin Powell's eyes (71%)".

Enrolment stores a mean embedding per identity (whole face, and eyes, nose and mouth regions) in
the bundle's gallery.npz; matching compares a photo's embeddings with them by cosine similarity.
Identities need not be ones the network was trained on: enrolment is not retraining. ``app.py`` is
celebmatch as an app of the image endpoint (tandem.apps.base).

The names below load on first use: listing the apps (``tandem info``) must not import the face
finder and the gallery search.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tandem.apps.celebmatch.gallery import Gallery, enroll
    from tandem.apps.celebmatch.matcher import CelebMatcher, MatchResult

__all__ = ["CelebMatcher", "Gallery", "MatchResult", "enroll"]
_HOME = {"CelebMatcher": "matcher", "MatchResult": "matcher", "Gallery": "gallery", "enroll": "gallery"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
