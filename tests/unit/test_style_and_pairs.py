"""Deep art's other two sources: before/after pairs (matched by name, the same size) and a neural
style's losses on fixed random filters (issue 18)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tandem.data.photos import find_pairs, is_pair_folder, load_pairs, load_style
from tandem.errors import DataError
from tandem.training.style_loss import RandomFeatures, StyleLoss, StyleWeights, gram


def _photo(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def _pairs(root: Path, names: list[str], target_size: tuple[int, int] = (40, 30)) -> Path:
    for i, name in enumerate(names):
        _photo(root / "input" / f"{name}.jpg", (40, 30), i)
        _photo(root / "target" / f"{name}.png", target_size, 100 + i)
    return root


def test_pairs_are_matched_by_name_whatever_their_extensions(tmp_path):
    root = _pairs(tmp_path / "p", ["a", "b", "c"])
    assert is_pair_folder(str(root)) and not is_pair_folder(str(tmp_path)) and not is_pair_folder("lfw")
    found = find_pairs(str(root))
    assert found.targets == {"input/a.jpg": "target/a.png", "input/b.jpg": "target/b.png", "input/c.jpg": "target/c.png"}
    assert found.source == "pairs:p" and len(found.fingerprint()) == 64
    before, after, kept = load_pairs(root, found.targets, found.files, 32)
    assert before.shape == after.shape == (3, 32, 32, 3) and kept == found.files
    assert not np.array_equal(before, after)
    # Pairs asked for by name (`--teacher-effect pairs`) of a folder that holds none: said, not a traceback.
    with pytest.raises(DataError, match=r"need the folders input/ and target/"):
        find_pairs(str(root / "input"))


def test_a_lonely_input_or_target_is_named_and_nothing_is_trained(tmp_path):
    root = _pairs(tmp_path / "p", ["a", "b"])
    _photo(root / "input" / "c.jpg", (40, 30), 9)
    _photo(root / "target" / "d.jpg", (40, 30), 9)
    with pytest.raises(DataError, match=r"1 input\(s\) without a target \(e\.g\. c\.jpg\) and 1 target\(s\) without an "
                                        r"input \(e\.g\. d\.jpg\)"):
        find_pairs(str(root))
    (root / "target" / "a.jpg").write_bytes((root / "target" / "a.png").read_bytes())
    with pytest.raises(DataError, match=r"a\.jpg and a\.png have the same name"):
        find_pairs(str(root))


def test_pairs_of_different_sizes_are_refused_naming_them(tmp_path):
    root = _pairs(tmp_path / "p", ["a", "b"], target_size=(41, 30))
    found = find_pairs(str(root))
    with pytest.raises(DataError, match=r"2 pair\(s\) differ in size \(input/a\.jpg is 40×30, target/a\.png 41×30"):
        load_pairs(root, found.targets, found.files, 32)


def test_an_unreadable_pair_is_left_out(tmp_path):
    root = _pairs(tmp_path / "p", ["a", "b"])
    (root / "target" / "b.png").write_bytes(b"not a picture")
    found = find_pairs(str(root))
    before, _, kept = load_pairs(root, found.targets, found.files, 16)
    assert kept == ["input/a.jpg"] and len(before) == 1


def test_a_style_picture_keeps_its_aspect_at_the_photos_scale_and_a_bad_one_is_refused(tmp_path):
    _photo(tmp_path / "style.png", (300, 150), 0)
    assert load_style(tmp_path / "style.png", 64).shape == (64, 128, 3)
    (tmp_path / "bad.jpg").write_bytes(b"<html>")
    with pytest.raises(DataError, match=r"--style-image: .*give a JPEG or PNG picture of the style"):
        load_style(tmp_path / "bad.jpg", 64)
    _photo(tmp_path / "tiny.png", (8, 40), 0)
    with pytest.raises(DataError, match="is 8×40 pixels; give a picture at least 16 pixels"):
        load_style(tmp_path / "tiny.png", 64)


def test_the_loss_network_is_fixed_by_its_seed():
    a, b, c = RandomFeatures(0), RandomFeatures(0), RandomFeatures(1)
    assert torch.equal(a.weights, b.weights) and not torch.equal(a.weights, c.weights)
    assert not any(p.requires_grad for p in a.parameters())
    x = torch.zeros(1, 40, 24, 3)
    assert [f.shape[-2:] for f in a(x)] == [(40, 24), (20, 12), (10, 6), (5, 3)]


def test_the_style_loss_is_zero_for_the_style_itself_and_grows_away_from_it():
    rng = np.random.default_rng(0)
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::8] = (250, 200, 20)
    loss = StyleLoss(stripes)
    same = loss.parts(torch.from_numpy(stripes[None]).float(), torch.from_numpy(stripes[None]).float())
    assert float(same["style"]) < 1e-10 and float(same["content"]) < 1e-10
    noise = torch.from_numpy(rng.integers(0, 256, (1, 64, 64, 3)).astype(np.float32))
    other = loss.parts(noise, noise)
    assert float(other["style"]) > 0.01 and float(other["content"]) < 1e-10  # the photo's own content kept
    # A Gram matrix forgets where: the stripes moved sideways are the same style.
    moved = torch.from_numpy(np.roll(stripes, 3, axis=1)[None]).float()
    assert float(loss.parts(moved, moved)["style"]) < 0.05 * float(other["style"])


def test_the_style_loss_trains_pixels_towards_the_style():
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::4] = 255
    loss = StyleLoss(stripes, StyleWeights(style=1.0, content=0.0, tv=0.0))  # the style loss alone
    photo = torch.from_numpy(np.random.default_rng(0).normal(128, 30, (1, 32, 32, 3)).astype(np.float32))
    pixels = photo.clone().requires_grad_(True)
    opt = torch.optim.Adam([pixels], lr=16.0)
    start = float(loss.parts(pixels.detach(), photo)["style"])
    for _ in range(100):
        opt.zero_grad()
        loss(pixels, photo).backward()
        opt.step()
    assert float(loss.parts(pixels.detach(), photo)["style"]) < 0.5 * start


def test_gram_is_the_mean_outer_product_of_channels():
    f = torch.arange(12, dtype=torch.float32).reshape(1, 2, 2, 3)
    g = gram(f)
    flat = f.reshape(2, 6)
    assert torch.allclose(g[0], flat @ flat.T / 6)
