"""celebmatch on people the network never saw: the open-set figures of issue 15.

    .venv/bin/python bench/open_set.py --run RUN --bundle BUNDLE [--demo-run R --demo-bundle B]
    (bench/accuracy.py --part open-set trains both and calls this)

Everything is measured in one run, on the embed run's own identity-disjoint split, for the fp32 and
int8 networks and for eigenfaces (PCA 150 whitened, fitted on the training people's aligned
grayscale crops, compared by cosine):

- ``verif_acc``, ``verif_auc``, ``tar_at_far1``: LFW's pairs.txt, folds 9 and 10 — whose people
  were kept out of training — each fold's accuracy at the threshold best on the other fold,
  averaged; ``own_*`` the same on 3,000 same-person and 3,000 different-person pairs drawn from
  all held-out people, in ten folds.
- ``open_top1`` (``_k1``): held-out people with at least 6 photos, 5 (1) enrolled, every other photo
  a query; the gallery also holds every training person (their mean embedding) as a distractor.
- ``reject_at_far1``: photos of held-out people with 2–5 photos (never enrolled) searched in that
  gallery; the share answered "no close match" at the app's own threshold (1% of the bundle's
  validation-people impostors pass, for this gallery).
- ``region_top1``: the same identification from the eyes, nose or mouth view alone.
- ``detect_rate``, ``align_px_err``: on 1,000 random LFW photos, the share where the detector
  finds a face the landmark network accepts, and the mean distance (pixels of the 250×250 photo,
  and in eye distances) of our five landmarks to those from dlib's 68-point model (eye centres,
  nose tip, mouth corners) — a second opinion, not ground truth.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from tandem.apps.celebmatch.kit import FaceKit
from tandem.bundle import Bundle
from tandem.bundle.runtime import OnnxModel
from tandem.data.catalog import ImageCatalog
from tandem.data.faces import align_catalog
from tandem.data.lfw_pairs import read_pairs
from tandem.faces import metrics
from tandem.faces.calibration import no_match_threshold
from tandem.settings import get_settings
from tandem.training.embed import HELD_OUT_FOLDS, verification_pairs
from tandem.training.run import RunData, load_run

console = Console()
ENROL = 5


@dataclass
class Faces:
    pixels: np.ndarray
    labels: np.ndarray
    files: list[str]


def aligned(data: RunData, indices: list[int], kit: FaceKit) -> Faces:
    cat = data.catalog()
    sub = ImageCatalog(cat.root, cat.classes, [cat.records[i] for i in indices], cat.crop, cat.source)
    f = align_catalog(sub, kit.align, kit.landmarker)
    return Faces(f.pixels, f.labels, [sub.records[i].path.relative_to(cat.root).as_posix() for i in f.kept])


class Embedder:
    """Embeddings of aligned faces (and their region views) by one network, or by eigenfaces."""

    def __init__(self, kind: str, bundle: Bundle, kit: FaceKit, fit: Faces | None = None, seed: int = 0) -> None:
        self.kind, self.kit = kind, kit
        if kind == "eigenfaces":
            from sklearn.decomposition import PCA

            assert fit is not None
            self.pca = PCA(n_components=150, whiten=True, svd_solver="randomized", random_state=seed)
            x = self._gray(fit.pixels)
            self.mean = x.mean(0)
            self.pca.fit(x - self.mean)
        else:
            self.model = OnnxModel.open(bundle, kind)

    @staticmethod
    def _gray(px: np.ndarray) -> np.ndarray:
        return (px.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).reshape(len(px), -1) / 255.0

    def embed(self, px: np.ndarray, view: str = "face") -> np.ndarray:
        if view != "face":
            px = self.kit.views(px)[view]
        if self.kind == "eigenfaces":
            return metrics.unit(self.pca.transform(self._gray(px) - self.mean))
        return metrics.unit(self.model.run(px)["embedding"])


def lfw_pairs(data: RunData, test: Faces, emb: np.ndarray) -> metrics.Verification | None:
    if data.source != "lfw":
        return None
    at = {f: i for i, f in enumerate(test.files)}
    use = [p for p in read_pairs(data.catalog().root.parent / "pairs.txt")
           if p.fold in HELD_OUT_FOLDS and p.a in at and p.b in at]
    s = np.array([float(emb[at[p.a]] @ emb[at[p.b]]) for p in use])
    return metrics.verify_folds(s, np.array([p.same for p in use]), np.array([p.fold for p in use]))


def own_pairs(test: Faces, emb: np.ndarray, seed: int) -> metrics.Verification:
    a, b, same = verification_pairs(test.labels, 3000, seed)
    folds = np.random.default_rng(seed).integers(0, 10, len(a))
    return metrics.verify_folds((emb[a] * emb[b]).sum(1), same, folds)


def identification(test: Faces, emb: np.ndarray, distractors: tuple[np.ndarray, np.ndarray], k: int
                   ) -> tuple[float, np.ndarray, np.ndarray, list[int]]:
    """Top-1 of queries of people with > ENROL photos, ``k`` enrolled each. Returns (top-1, gallery
    templates, gallery labels, indices of the strangers' photos)."""
    people = {c: np.flatnonzero(test.labels == c) for c in np.unique(test.labels)}
    enrolled = {c: idx for c, idx in people.items() if len(idx) > ENROL}
    g_lab = np.array(list(enrolled), dtype=np.int64)
    g_vec = metrics.unit(np.stack([emb[idx[:k]].mean(0) for idx in enrolled.values()]))
    queries = np.concatenate([idx[ENROL:] for idx in enrolled.values()])
    d_vec, d_lab = distractors
    gallery, labels = np.concatenate([g_vec, d_vec]), np.concatenate([g_lab, d_lab])
    best, _ = metrics.identify(gallery, labels, emb[queries])
    strangers = [int(i) for c, idx in people.items() if c not in enrolled for i in idx]
    return float((best == test.labels[queries]).mean()), gallery, labels, strangers


def evaluate(run: Path, bundle_dir: Path, seed: int = 0, with_eigenfaces: bool = True, regions: bool = True) -> dict:
    bundle = Bundle.load(bundle_dir)
    kit = FaceKit.of(bundle)
    assert kit is not None, f"{bundle_dir} is not a face-embedding bundle"
    _, data = load_run(run, get_settings().data_home)
    t0 = time.perf_counter()
    console.print("aligning the held-out, training and validation people's photos")
    test = aligned(data, data.split["test"], kit)
    train = aligned(data, data.split["train"], kit)
    val = aligned(data, data.split["val"], kit)
    out: dict[str, dict] = {}
    kinds = ["fp32", "int8"] + (["eigenfaces"] if with_eigenfaces else [])
    for kind in kinds:
        console.print(f"measuring {kind}")
        e = Embedder(kind, bundle, kit, train, seed)
        r: dict[str, float | int] = {}
        te = e.embed(test.pixels)
        v = lfw_pairs(data, test, te)
        if v is not None:
            r.update(verif_acc=v.accuracy, verif_auc=v.auc, tar_at_far1=v.tar_at_far1, verif_pairs=v.pairs)
        o = own_pairs(test, te, seed)
        r.update(own_verif_acc=o.accuracy, own_verif_auc=o.auc, own_tar_at_far1=o.tar_at_far1, own_pairs=o.pairs)
        tr = e.embed(train.pixels)
        d_lab, d_vec = metrics.templates(tr, train.labels)
        top1, gallery, g_labels, strangers = identification(test, te, (d_vec, d_lab), ENROL)
        r["open_top1"] = top1
        r["open_top1_k1"] = identification(test, te, (d_vec, d_lab), 1)[0]
        # The app's case: a gallery of people the network never saw (the held-out people with 2-5
        # photos, each enrolled from all of them, as distractors), no training photo in it.
        few = [c for c in np.unique(test.labels) if 2 <= (test.labels == c).sum() <= ENROL]
        if few:
            s_lab, s_vec = metrics.templates(te[np.isin(test.labels, few)], test.labels[np.isin(test.labels, few)])
            r["open_top1_unseen_gallery"] = identification(test, te, (s_vec, s_lab), ENROL)[0]
            r["unseen_distractors"] = len(s_lab)
        # The no-match threshold as the app sets it: validation people searched in this gallery. The
        # bundle's impostors are the fp32 network's; other embedders embed the same photos themselves.
        ve = e.embed(val.pixels)
        names = [data.classes[int(c)] for c in val.labels]
        threshold = no_match_threshold(ve, names, gallery, [data.classes[int(c)] for c in g_labels], kit.far)
        if strangers:
            best = (te[strangers] @ gallery.T).max(1)
            r["reject_at_far1"] = float((best < threshold).mean())
        r["no_match_threshold"] = threshold
        r.update(gallery_identities=len(g_labels), distractors=len(d_lab), strangers=len(strangers),
                 test_people=len(np.unique(test.labels)), test_photos=len(test.labels))
        if regions:
            for view in kit.regions:
                ge = e.embed(test.pixels, view)
                de = metrics.templates(e.embed(train.pixels, view), train.labels)
                r[f"region_top1_{view}"] = identification(test, ge, (de[1], de[0]), ENROL)[0]
        out[kind] = r
    out["seconds"] = {"total": round(time.perf_counter() - t0, 1)}
    return out


def ann_recall(run: Path, bundle_dir: Path, seed: int = 0) -> dict:
    """How often the gallery's approximate index (forced on) gives the exact top-1: the open-set
    gallery (held-out people's templates and every training person) searched by the held-out photos."""
    from tandem.apps.celebmatch.gallery import VIEWS, Gallery

    bundle = Bundle.load(bundle_dir)
    kit = FaceKit.of(bundle)
    assert kit is not None
    _, data = load_run(run, get_settings().data_home)
    test, train = aligned(data, data.split["test"], kit), aligned(data, data.split["train"], kit)
    e = Embedder("fp32", bundle, kit)
    te, tr = e.embed(test.pixels), e.embed(train.pixels)
    labels, vectors = metrics.templates(np.concatenate([te, tr]), np.concatenate([test.labels, train.labels]))
    dim = vectors.shape[1]
    g = Gallery([str(c) for c in labels], np.ones(len(labels), np.int64), {v: vectors.astype(np.float32) for v in VIEWS},
                {v: np.zeros(dim, np.float32) for v in VIEWS})
    indexed = g.with_indexes(above=0)
    t0 = time.perf_counter()
    exact = [int(g.top("face", q, 1)[0][0]) for q in te]
    t1 = time.perf_counter()
    approx = [int(indexed.top("face", q, 1)[0][0]) for q in te]
    t2 = time.perf_counter()
    return {"ann_recall_at1": float(np.mean(np.array(exact) == np.array(approx))), "ann_gallery": len(labels),
            "ann_queries": len(te), "exact_ms": (t1 - t0) * 1e3 / len(te), "ann_ms": (t2 - t1) * 1e3 / len(te)}


def detection(n: int = 1000, seed: int = 0, bundle_dir: Path | None = None) -> dict:
    """detect_rate and align_px_err on ``n`` random LFW photos (see the module docstring)."""
    import importlib.metadata

    import dlib
    from PIL import Image

    from tandem.faces.finder import FaceFinder

    assert bundle_dir is not None
    kit = FaceKit.of(Bundle.load(bundle_dir))
    assert kit is not None
    root = get_settings().require_data_home() / "lfw_home" / "lfw_funneled"
    files = sorted(root.glob("*/*.jpg"))
    pick = [files[i] for i in np.random.default_rng(seed).choice(len(files), min(n, len(files)), replace=False)]
    models = Path(str(importlib.metadata.distribution("face-recognition-models").locate_file(
        "face_recognition_models/models")))
    hog = dlib.get_frontal_face_detector()
    sp68 = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    finder = FaceFinder()
    found = 0
    px_err, iod_err = [], []
    for f in pick:
        img = Image.open(f).convert("RGB")
        faces = finder.find(img)
        if not faces:
            continue
        b = faces[0]
        pts, prob = kit.landmarker.find(img, (b.x, b.y, b.x + b.w, b.y + b.h))
        if prob < 0.5:
            continue
        found += 1
        arr = np.asarray(img)
        dets = hog(arr, 1)
        if not dets:
            continue
        d = min(dets, key=lambda r: abs(r.center().x - (b.x + b.w / 2)) + abs(r.center().y - (b.y + b.h / 2)))
        p = np.array([[q.x, q.y] for q in sp68(arr, d).parts()], float)
        ref = np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
        err = np.linalg.norm(pts - ref, axis=1).mean()
        px_err.append(err)
        iod_err.append(err / np.linalg.norm(ref[1] - ref[0]))
    return {"detect_rate": found / len(pick), "align_px_err": float(np.mean(px_err)),
            "align_err_eye_distances": float(np.mean(iod_err)), "detect_photos": len(pick),
            "align_photos": len(px_err)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    result = evaluate(args.run, args.bundle, args.seed)
    result["detection"] = detection(bundle_dir=args.bundle)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
