"""Datasets and loaders: the registry, the offline archive reader, the in-memory loader with batched
augmentation, ImageFolder loaders, and `build_loaders`, the one entry point the engine calls."""

from sebench.data.archive import CIFAR10_JPEG_SHA256, Layout, cache_root, load_archive
from sebench.data.build import Loaders, build_loaders
from sebench.data.folder import folder_loaders
from sebench.data.loader import AUGMENTS, ArrayLoader, epoch_seed
from sebench.data.registry import DATASETS, ArrayData, DatasetInfo, get_info, load_arrays, subset

__all__ = [
    "AUGMENTS", "CIFAR10_JPEG_SHA256", "DATASETS", "ArrayData", "ArrayLoader", "DatasetInfo", "Layout",
    "Loaders", "build_loaders", "cache_root", "epoch_seed", "folder_loaders", "get_info", "load_archive",
    "load_arrays", "subset",
]
