"""A teacher for the face embedding: dlib's ResNet face recogniser (the weights ship inside the
``face-recognition-models`` package; dlib itself from ``dlib-bin``), used only while training.

Trained on about three million photos, it separates people the student never saw; the student
(our small network, which runs on phones and in the browser) learns to put each training photo
where the teacher does (knowledge distillation, Hinton et al. 2015), next to a margin loss on the
identities. Photos of people with a single picture still teach this way: they need no label.

The teacher sees its own canonical chip (dlib's 5-point shape predictor inside our face box) and
runs in worker processes; its embeddings are cached in the run folder by file, so a resumed run
or a re-export never computes them twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tandem import atomic

log = logging.getLogger(__name__)

DIST = "face-recognition-models"
SHAPE = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
RESNET = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
DIM = 128
CHUNK = 32

Box = tuple[float, float, float, float]


def model_files() -> tuple[Path, Path]:
    from tandem.models.wheel_files import wheel_file

    return (wheel_file(DIST, SHAPE, "--teacher dlib's face landmarks", extra="teacher"),
            wheel_file(DIST, RESNET, "--teacher dlib's face network", extra="teacher"))


_worker: dict[str, Any] = {}


def _init() -> None:
    import dlib

    shape, resnet = model_files()
    _worker["sp"] = dlib.shape_predictor(str(shape))
    _worker["rec"] = dlib.face_recognition_model_v1(str(resnet))


def _embed(job: tuple[str, Box | None]) -> np.ndarray:
    import dlib

    path, box = job
    try:
        img = dlib.load_rgb_image(path)
    except RuntimeError:
        return np.full(DIM, np.nan, np.float32)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box if box is not None else (0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h)
    rect = dlib.rectangle(round(x0), round(y0), round(x1), round(y1))
    chip = dlib.get_face_chip(img, _worker["sp"](img, rect), size=150, padding=0.25)
    return np.asarray(_worker["rec"].compute_face_descriptor(chip), np.float32)


def teacher_embeddings(files: Sequence[Path], boxes: Sequence[Box | None], keys: Sequence[str], cache: Path,
                       progress: Callable[[int], None] | None = None, processes: int | None = None) -> np.ndarray:
    """N×128 teacher embeddings (NaN rows for unreadable files), from ``cache`` where it has them
    (by ``keys``, e.g. paths relative to the data root), the rest computed and added to it."""
    model_files()
    have: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            have = dict(zip((str(k) for k in z["keys"]), z["embeddings"], strict=True))
    todo = [i for i, k in enumerate(keys) if k not in have]
    if todo:
        workers = processes or max(1, len(os.sched_getaffinity(0)))
        log.info("teacher: embedding %d photos in %d processes", len(todo), workers)
        with ProcessPoolExecutor(workers, initializer=_init) as pool:
            jobs = [(str(files[i]), boxes[i]) for i in todo]
            for start in range(0, len(jobs), CHUNK * workers):
                part = jobs[start : start + CHUNK * workers]
                for i, v in zip(todo[start : start + len(part)], pool.map(_embed, part, chunksize=CHUNK), strict=True):
                    have[keys[i]] = v
                if progress:
                    progress(len(part))
                _save(cache, have)  # a stopped run keeps what it computed
    elif progress:
        progress(len(keys))
    return np.stack([have[k] for k in keys])


def _save(cache: Path, have: dict[str, np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, keys=np.array(list(have), dtype=str), embeddings=np.stack(list(have.values())).astype(np.float32))
    atomic.write_bytes(cache, buf.getvalue())


def centred(embeddings: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Unit teacher embeddings measured from the training photos' mean. dlib's embeddings all lie in
    a narrow cone (two strangers' mean cosine is 0.84); a student fitted to them uncentred learns
    mostly that shared direction (measured: cosine 0.88 with the teacher, verification 0.61)."""
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    e = e - mean
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
