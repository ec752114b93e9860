"""Finding the nearest identities in a gallery: exact with numpy up to ``EXACT_UP_TO`` identities,
an HNSW graph (usearch) above, stored in gallery.npz as its serialized bytes.

usearch rather than faiss-cpu or hnswlib: one small wheel without BLAS of its own, serialization to
bytes (the index travels inside the bundle, over the air too), inner-product metric, maintained. The
graph only proposes candidates: their similarities are computed exactly with numpy, so an answer the
graph finds is the exact answer, and bench/open_set.py measures how often it finds it (recall).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tandem.errors import ConfigError

if TYPE_CHECKING:
    from usearch.index import Index

# A gallery this size is searched exactly in ~2 ms a photo with numpy on one core (4 views × 20,000 × 128).
EXACT_UP_TO = 20_000
CANDIDATES = 32


def _usearch() -> type[Index]:
    try:
        from usearch.index import Index
    except ImportError as e:
        raise ConfigError("this gallery holds an approximate-search index and needs the usearch package: "
                          "pip install 'tandem[ann]'") from e
    return Index


def build_index(vectors: np.ndarray) -> np.ndarray:
    """The serialized HNSW index of unit ``vectors`` (N×D), as a uint8 array for gallery.npz."""
    index = _usearch()(ndim=vectors.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=128,
                       expansion_search=CANDIDATES * 2)
    index.add(np.arange(len(vectors), dtype=np.uint64), np.ascontiguousarray(vectors, np.float32))
    serialized = index.save()  # with no path given, the index as bytes (typed Optional for save(path))
    assert serialized is not None
    return np.frombuffer(bytes(serialized), np.uint8)


class Searcher:
    """Top-k identities by cosine similarity, exactly or through the stored index."""

    def __init__(self, vectors: np.ndarray, index: np.ndarray | None = None) -> None:
        self.vectors = vectors
        self.index: Index | None = None
        if index is not None and len(index):
            self.index = _usearch().restore(index.tobytes())

    def top(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, similarities) of the ``k`` best identities for one unit query vector, best first."""
        k = min(k, len(self.vectors))
        if self.index is None:
            sims = self.vectors @ query
            order = np.argsort(-sims, kind="stable")[:k]
            return order, sims[order]
        found = self.index.search(np.ascontiguousarray(query, np.float32), max(k, CANDIDATES))
        cand = np.asarray(found.keys, np.int64)
        sims = self.vectors[cand] @ query
        order = np.argsort(-sims, kind="stable")[:k]
        return cand[order], sims[order]
