"""Datasets: a folder with one sub-folder per class, or LFW read from its person folders."""

from tandem.data.catalog import ImageCatalog, ImageRecord
from tandem.data.resolve import load_catalog

__all__ = ["ImageCatalog", "ImageRecord", "load_catalog"]
