"""Network definitions (torch). Imported only by training and export, never by the device path."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tandem.models.dlib_resnet import FaceResNet
    from tandem.models.mobilenet import EmbeddingNet, NetConfig

    FaceNet = EmbeddingNet | FaceResNet


def build_face_net(cfg: NetConfig, pretrained: bool = True) -> FaceNet:
    """The face embedding's network for ``cfg.arch``; ``pretrained``: the dlib backbone starts from
    dlib's weights (False when a checkpoint's weights are loaded next)."""
    if cfg.arch == "dlib-resnet":
        from tandem.models.dlib_resnet import FaceResNet

        return FaceResNet(cfg, pretrained)
    from tandem.models.mobilenet import EmbeddingNet

    return EmbeddingNet(cfg)
