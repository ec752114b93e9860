"""dlib's face ResNet read into PyTorch: the same numbers as dlib itself on the same chip, and the
reader's refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tandem.errors import ConfigError
from tandem.models.dlib_resnet import DIM, DlibResNet, FaceResNet, dlib_net_config, read_dlib_params, weights_path
from tandem.training.teacher import model_files


@pytest.fixture(scope="module")
def net() -> DlibResNet:
    return DlibResNet().eval()


def _chips(lfw_people, n: int) -> np.ndarray:
    import dlib

    shape, _ = model_files()
    sp = dlib.shape_predictor(str(shape))
    chips = []
    for path in sorted(lfw_people.glob("*/*_0001.jpg"))[:n]:
        img = dlib.load_rgb_image(str(path))
        h, w = img.shape[:2]
        rect = dlib.rectangle(w // 4, h // 4, 3 * w // 4, 3 * h // 4)
        chips.append(dlib.get_face_chip(img, sp(img, rect), size=150, padding=0.25))
    return np.stack(chips)


def test_the_network_gives_dlibs_own_embeddings(net, lfw_people):
    import dlib

    _, resnet = model_files()
    rec = dlib.face_recognition_model_v1(str(resnet))
    chips = _chips(lfw_people, 4)
    with torch.no_grad():
        ours = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).numpy()
    theirs = np.stack([np.asarray(rec.compute_face_descriptor(c)) for c in chips])
    assert ours.shape == (4, DIM)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # Different people are told apart by dlib's own rule (Euclidean distance under 0.6 = same person).
    d = np.linalg.norm(ours[:, None] - ours[None], axis=-1)
    assert (d[~np.eye(4, dtype=bool)] > 0.6).all()


def test_the_face_interface_takes_unit_pixels_and_has_no_classifier(net):
    face = FaceResNet(dlib_net_config(), pretrained=False)
    face.body.load_state_dict(net.state_dict())
    x = torch.rand(2, 3, 150, 150)
    logits, emb = face(x)
    assert logits.shape == (2, 0)
    torch.testing.assert_close(emb, net(x * 255.0))


def test_the_reader_finds_every_layer_in_order():
    layers = read_dlib_params(weights_path())
    assert [k for k, _ in layers].count("con") == 29 and layers[-1][0] == "fc"
    assert layers[0][1].size == 32 * 3 * 7 * 7 + 32  # the 7×7 stem: filters then biases


def test_a_file_that_is_not_the_network_is_refused(tmp_path):
    from tandem.models.dlib_resnet import load_dlib_weights

    bogus = tmp_path / "net.dat"
    bogus.write_bytes(b"a file of another kind")
    with pytest.raises(ConfigError, match="does not hold dlib's 29-layer face ResNet"):
        load_dlib_weights(DlibResNet(pretrained=False), bogus)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(weights_path().read_bytes()[:20_000])  # the stem's numbers, then nothing
    with pytest.raises(ConfigError, match="end early"):
        load_dlib_weights(DlibResNet(pretrained=False), cut)
