"""The run folder's plots and the advisor's charts say what they show: the epoch a run keeps is
marked, the confusion matrix's shades have a scale, and lines that coincide stay distinguishable."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
from PIL import Image

from tandem.advisor import charts
from tandem.training import plots

HISTORY = [
    {"epoch": 1, "train_loss": 1.2, "val_loss": 1.1, "train_acc": 0.4, "val_acc": 0.50},
    {"epoch": 2, "train_loss": 0.8, "val_loss": 0.9, "train_acc": 0.6, "val_acc": 0.70},
    {"epoch": 3, "train_loss": 0.5, "val_loss": 1.0, "train_acc": 0.8, "val_acc": 0.65},
]


def test_the_curves_mark_the_epoch_the_run_keeps(tmp_path):
    assert plots.best_epoch_of(HISTORY) == 2
    fig = plots.curves_figure(HISTORY)
    try:
        for ax in fig.axes:
            [marker] = [line for line in ax.get_lines() if line.get_label().startswith(plots.BEST_LABEL)]
            assert list(marker.get_xdata()) == [2, 2]  # a vertical line at epoch 2
        star = [line for line in fig.axes[1].get_lines() if line.get_marker() == "*"]
        assert [(list(s.get_xdata()), list(s.get_ydata())) for s in star] == [([2], [0.70])]
    finally:
        plots._pyplot().close(fig)
    plots.plot_curves(HISTORY, tmp_path / "curves.png", best_epoch=3)  # the checkpoint's word wins
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG"


def test_the_confusion_matrix_has_a_colour_bar(tmp_path):
    cm = plots.confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 0]), 3)
    fig = plots.confusion_figure(cm, ["Ann", "Bob", "Cy"], "Confusion")
    try:
        assert [ax.get_label() for ax in fig.axes][1:] == ["<colorbar>"]
        assert fig.axes[1].get_ylim() == (0.0, 1.0)  # shares of each true class
    finally:
        plots._pyplot().close(fig)
    plots.plot_confusion(cm, ["Ann", "Bob", "Cy"], tmp_path / "confusion.png", "Confusion")
    with Image.open(tmp_path / "confusion.png") as im:
        assert im.format == "PNG"


def test_lines_that_coincide_stay_distinguishable():
    same = [1.0, 2.0, 4.0]
    svg = ET.fromstring(charts.lines(["device", "split@3", "cloud"], {"small": same, "large": same},
                                     title="latency", y_label="ms"))
    ns = "{http://www.w3.org/2000/svg}"
    lines = svg.findall(f"{ns}polyline")
    assert len(lines) == 2
    assert lines[0].get("stroke-dasharray") != lines[1].get("stroke-dasharray")
    xs = [[p.split(",")[0] for p in line.get("points", "").split()] for line in lines]
    assert all(a != b for a, b in zip(*xs, strict=True))  # side by side within each category
    shapes = {el.tag.removeprefix(ns) for el in svg if el.find(f"{ns}title") is not None
              and el.find(f"{ns}title").text.startswith(("small", "large"))}  # type: ignore[union-attr]
    assert shapes == {"circle", "rect"}  # each line's points in a shape of its own
