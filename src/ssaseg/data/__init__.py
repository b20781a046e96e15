"""Datasets (ADE20K, COCO-Stuff-10K, PASCAL-Context 59/60, folder, demo) and mmseg 0.30 pipelines.

See :mod:`ssaseg.data.datasets` (layouts), :mod:`ssaseg.data.transforms` (augmentations and the
libraries they use), :mod:`ssaseg.data.io` (file decoding) and :mod:`ssaseg.data.demo`.
"""
from .datasets import DATASETS, RepeatDataset, SegDataset, build_dataset, collate_train, read_class_file
from .io import DataError, load_image, load_label
from .transforms import IGNORE_INDEX, TestPipeline, TrainPipeline

__all__ = [
    "DATASETS",
    "DataError",
    "IGNORE_INDEX",
    "RepeatDataset",
    "SegDataset",
    "TestPipeline",
    "TrainPipeline",
    "build_dataset",
    "collate_train",
    "load_image",
    "load_label",
    "read_class_file",
]
