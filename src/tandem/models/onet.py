"""MTCNN's O-Net (Zhang et al., 2016): a 48×48 face crop in, five landmarks (eye centres, nose tip,
mouth corners), a refined box and a face probability out.

The weights are the ones ``facenet-pytorch`` ships inside its wheel (MIT licence): read from the
installed distribution's files, never downloaded. The network is written out here because the
package itself pins an old torch and imports torchvision.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tandem.export.onnx_export import write_onnx
from tandem.models.wheel_files import wheel_file

WEIGHTS_DIST = "facenet-pytorch"
WEIGHTS_FILE = "facenet_pytorch/data/onet.pt"
SIZE = 48


def weights_path() -> Path:
    return wheel_file(WEIGHTS_DIST, WEIGHTS_FILE, "the face landmark weights")


class ONet(nn.Module):
    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        if pretrained:
            self.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: N×3×48×48, (pixel − 127.5) / 128. Returns (box offsets N×4, landmarks N×10 as
        x1..x5 then y1..y5 in fractions of the crop, face probability N)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        # The original Caffe weights flatten width-major; facenet-pytorch's port keeps that order.
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        prob = torch.softmax(self.dense6_1(x), dim=1)[:, 1]
        return self.dense6_2(x), self.dense6_3(x), prob


class PixelONet(nn.Module):
    """What landmarks.onnx holds: uint8 NHWC 48×48 pixels in; the scaling is in the graph."""

    def __init__(self, onet: ONet) -> None:
        super().__init__()
        self.onet = onet

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (pixels.permute(0, 3, 1, 2).float() - 127.5) * 0.0078125
        box, landmarks, prob = self.onet(x)
        return landmarks, prob, box


def export_landmarker(path: Path) -> None:
    """landmarks.onnx: inputs ``pixels`` (N×48×48×3 uint8), outputs ``landmarks`` (N×10),
    ``face_probability`` (N), ``box_offsets`` (N×4)."""
    model = PixelONet(ONet().eval()).eval()
    example = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    write_onnx(model, example, path, "pixels", ["landmarks", "face_probability", "box_offsets"])
