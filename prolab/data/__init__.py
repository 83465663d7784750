"""Datasets: readers for the supported layouts, the union label space, augmentation, caching."""
from prolab.data.dataset import SegmentationDataset, fuse_labels, load_pair
from prolab.data.readers import (SegSample, SegSource, data_root, read_ade20k, read_folder,
                                 read_shared, read_source)
from prolab.data.transforms import AugmentConfig, augment
from prolab.data.union import UnionSpace, build_union, label_maps, load_union, space_from_classes

__all__ = ["AugmentConfig", "SegSample", "SegSource", "SegmentationDataset", "UnionSpace", "augment",
           "build_union", "data_root", "fuse_labels", "label_maps", "load_pair", "load_union",
           "read_ade20k", "read_folder", "read_shared", "read_source", "space_from_classes"]
