"""dlib's face recogniser (``dlib_face_recognition_resnet_model_v1``) as a PyTorch network, its
weights read from the ``face-recognition-models`` wheel: a 29-layer ResNet trained by Davis King on
about three million faces (LFW verification 0.9938 as published), so our face embedding starts
from a network that has already seen far more people than LFW holds, and is fine-tuned from there.

Written out here rather than converted with a tool because there is none: dlib's serialisation
is its own. The layout this reader relies on (dlib/dnn/layers.h, dlib/cuda/tensor.h):
a layer's name as a length-prefixed string, then for ``con_`` and ``affine_`` its parameter
tensor — a version int (2), four dimensions as dlib's variable-length ints, then little-endian
float32s: a convolution's filters (O×I×H×W) then its biases, an affine layer's gamma then beta
(one per channel), a ``fc_`` layer's weights as inputs × outputs after its two sizes. Every
tensor's size is checked against the architecture, and parity with dlib itself is a test.

Two of dlib's rules the network repeats: a strided convolution or pooling has no padding, and a
residual sum of two tensors of different shapes (channels or size) is taken over the larger,
the missing elements counting as zero.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tandem.errors import ConfigError
from tandem.models.mobilenet import NetConfig
from tandem.models.wheel_files import wheel_file

DIST = "face-recognition-models"
FILE = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
SIZE = 150
ARCH = "dlib-resnet"
# Where the five landmarks (tandem.faces.align.POINTS) fall on dlib's 150-pixel chip (its 5-point
# shape predictor, padding 0.25), measured as the mean over 300 LFW photos of O-Net's landmarks mapped
# into dlib's own chip. Aligning onto these points gives the network the crop it was trained on:
# LFW verification (folds 9-10) 0.995, against 0.863 on ArcFace's template at the same size.
CHIP_TEMPLATE = ((47.09, 45.488), (101.325, 45.357), (73.969, 77.497), (50.158, 104.133), (98.059, 104.133))
DIM = 128
# input_rgb_image_sized's averages (dlib/dnn/input.h), subtracted before dividing by 256
AVG_RGB = (122.782, 117.001, 104.298)
# (channels, blocks, first block halves the size) from input to output, as anet_type nests them
LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def weights_path() -> Path:
    return wheel_file(DIST, FILE, "the dlib face network's weights", extra="teacher")


def _pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger shape, missing elements zero (top-left aligned)."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class Affine(nn.Module):
    """dlib's affine layer (its batch norm, frozen at the end of its training): x·gamma + beta per
    channel. Not a BatchNorm: fine-tuning on a few thousand photos must not replace the statistics
    of three million with a batch's (measured: batch statistics alone drop LFW verification)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.bn1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_pad_add(y, skip))


class DlibResNet(nn.Module):
    """N×3×150×150 RGB floats in 0..255 (dlib's 150-pixel face chip) → N×128 embedding (dlib's
    raw output: not unit length; dlib compares by Euclidean distance, 0.6 for the same person)."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.avg: torch.Tensor
        self.register_buffer("avg", torch.tensor(AVG_RGB).view(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, 32, 7, stride=2)
        self.stem_bn = Affine(32)
        blocks: list[Block] = []
        c = 32
        for ch, n, down in LEVELS:
            for i in range(n):
                blocks.append(Block(c, ch, down and i == 0))
                c = ch
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, DIM, bias=False)
        if pretrained:
            load_dlib_weights(self, weights_path())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.avg) / 256.0
        x = F.max_pool2d(F.relu(self.stem_bn(self.stem(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def _varint(d: bytes, i: int) -> tuple[int, int]:
    head = d[i]
    size = head & 0x0F
    value = int.from_bytes(d[i + 1 : i + 1 + size], "little")
    return (-value if head & 0x80 else value), i + 1 + size


def _tensor(d: bytes, i: int) -> tuple[np.ndarray, int]:
    version, i = _varint(d, i)
    if version != 2:
        raise ConfigError(f"dlib tensor version {version} at byte {i} (this reader knows version 2)")
    dims = []
    for _ in range(4):
        v, i = _varint(d, i)
        dims.append(v)
    n = int(np.prod(dims))
    return np.frombuffer(d, "<f4", n, i).copy(), i + 4 * n


_LAYER = re.compile(rb"(con_\d|affine_\d?|fc_\d)")


def read_dlib_params(path: Path) -> list[tuple[str, np.ndarray]]:
    """Each parameterised layer's (kind, flat float32 params) from input to output."""
    d = path.read_bytes()
    out: list[tuple[str, np.ndarray]] = []
    for m in _LAYER.finditer(d):
        s, e = m.start(), m.end()
        if s < 2 or d[s - 2] != 1 or d[s - 1] != e - s:
            continue  # not a length-prefixed name: bytes inside a tensor that happen to spell one
        kind = m.group().decode().split("_")[0]
        i = e
        if kind == "fc":
            _, i = _varint(d, i)
            _, i = _varint(d, i)
        try:
            params, _ = _tensor(d, i)
        except (ValueError, IndexError) as e:  # cut short: a tensor runs past the end of the file
            raise ConfigError(f"{path.name}: a {kind} layer's numbers end early ({e}); reinstall {DIST}") from e
        out.append((kind, params))
    return out


def load_dlib_weights(net: DlibResNet, path: Path) -> None:
    layers = read_dlib_params(path)
    convs: list[tuple[nn.Conv2d, Affine]] = [(net.stem, net.stem_bn)]
    for b in net.blocks:
        assert isinstance(b, Block)
        convs += [(b.conv1, b.bn1), (b.conv2, b.bn2)]
    want = [k for _ in convs for k in ("con", "affine")] + ["fc"]
    if [k for k, _ in layers] != want:
        raise ConfigError(f"{path.name} does not hold dlib's 29-layer face ResNet "
                          f"({len(layers)} parameterised layers found, {len(want)} expected)")
    it = iter(layers)
    with torch.no_grad():
        for conv, aff in convs:
            p = next(it)[1]
            w = conv.weight
            if p.size != w.numel() + w.shape[0]:
                raise ConfigError(f"{path.name}: a convolution holds {p.size} numbers, {w.numel() + w.shape[0]} expected")
            w.copy_(torch.from_numpy(p[: w.numel()]).view_as(w))
            assert conv.bias is not None
            conv.bias.copy_(torch.from_numpy(p[w.numel() :]))
            g = next(it)[1]
            ch = w.shape[0]
            if g.size != 2 * ch:
                raise ConfigError(f"{path.name}: an affine layer holds {g.size} numbers, {2 * ch} expected")
            aff.gamma.copy_(torch.from_numpy(g[:ch]))
            aff.beta.copy_(torch.from_numpy(g[ch:]))
        fc = next(it)[1]
        if fc.size != 256 * DIM:
            raise ConfigError(f"{path.name}: the last layer holds {fc.size} numbers, {256 * DIM} expected")
        net.fc.weight.copy_(torch.from_numpy(fc.reshape(256, DIM).T.copy()))


class FaceResNet(nn.Module):
    """DlibResNet behind the face embedding's interface (tandem.models.mobilenet.EmbeddingNet's):
    N×3×H×W floats in [0, 1] in, (logits, embedding) out, ``mean``/``std`` buffers for the colour
    that normalises to zero. There is no classifier: the logits are an empty N×0 tensor."""

    def __init__(self, cfg: NetConfig, pretrained: bool = True) -> None:
        super().__init__()
        if cfg.embedding_dim != DIM:
            raise ConfigError(f"the dlib backbone gives {DIM}-dimensional embeddings, not {cfg.embedding_dim}")
        self.cfg = cfg
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1))
        self.body = DlibResNet(pretrained)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.body(x * 255.0)
        return emb[:, :0], emb


def dlib_net_config() -> NetConfig:
    r, g, b = AVG_RGB
    return NetConfig(num_classes=0, embedding_dim=DIM, mean=(r / 255, g / 255, b / 255), std=(256 / 255,) * 3,
                     dropout=0.0, arch=ARCH)
