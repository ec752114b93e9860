"""Celebrity match: "You look 85% like George W Bush — but you have Colin Powell's eyes (71%)".

Enrolment stores a mean embedding per identity (whole face, and eyes, nose and mouth regions) in
the bundle's gallery.npz; matching compares a photo's embeddings with them by cosine similarity.
Identities need not be ones the network was trained on: enrolment is not retraining.
"""

from tandem.apps.celebmatch.gallery import Gallery, enroll
from tandem.apps.celebmatch.matcher import CelebMatcher, MatchResult

__all__ = ["CelebMatcher", "Gallery", "MatchResult", "enroll"]
