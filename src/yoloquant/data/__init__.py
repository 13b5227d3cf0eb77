"""Datasets (image folder, Ultralytics yaml, COCO json), Ultralytics-identical letterbox, calibration images."""

from __future__ import annotations

from yoloquant.data.calibration import ImageCalibrator, default_cache_dir
from yoloquant.data.datasets import Dataset, load_dataset
from yoloquant.data.images import IMAGE_SUFFIXES, image_size, list_images, read_image
from yoloquant.data.labels import GroundTruth
from yoloquant.data.letterbox import LetterboxMeta, preprocess, scale_boxes

__all__ = [
    "IMAGE_SUFFIXES",
    "Dataset",
    "GroundTruth",
    "ImageCalibrator",
    "LetterboxMeta",
    "default_cache_dir",
    "image_size",
    "list_images",
    "load_dataset",
    "preprocess",
    "read_image",
    "scale_boxes",
]
