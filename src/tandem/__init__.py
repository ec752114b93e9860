"""Tandem: own your model end to end and run it where it works best."""

__version__ = "0.1.0"
