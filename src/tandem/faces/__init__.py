"""Faces in photos: finding them (finder.py), their five landmarks and the canonical aligned crop
(align.py). numpy, Pillow, OpenCV and ONNX Runtime only: this runs on devices."""
