"""Data: the IDX reader, Fashion-MNIST, image files and folders, in-memory splits and batching."""

from cnnlab.data.batches import (Augment, BatchLoader, denormalize, derive_seed, input_range, normalize, random_crop,
                                  random_hflip)
from cnnlab.data.decode import load_drawing, load_image, load_run_image
from cnnlab.data.datasets import UnknownDatasetError, list_datasets, load_dataset, select_classes
from cnnlab.data.splits import FOLDER_PREFIX, DataSplits, DatasetError, channel_stats
from cnnlab.data.folder import DatasetWarning, ImageTransform, load_folder
from cnnlab.data.images import (MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageDecodeError, ImageLimitError,
                                ImageTooLargeError, open_image, read_image)
from cnnlab.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    DataNotFoundError,
    download_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
)
from cnnlab.data.idx import IDXError, read_idx, write_idx

__all__ = [
    "Augment", "BatchLoader", "denormalize", "derive_seed", "input_range", "normalize", "random_crop", "random_hflip",
    "DataSplits", "DatasetError", "FOLDER_PREFIX", "UnknownDatasetError", "channel_stats", "list_datasets", "load_dataset",
    "select_classes", "load_drawing", "load_image", "load_run_image", "DatasetWarning", "ImageDecodeError", "ImageTransform", "load_folder",
    "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "ImageLimitError", "ImageTooLargeError", "open_image", "read_image",
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "DataNotFoundError",
    "download_fashion_mnist", "find_fashion_mnist", "load_fashion_mnist",
    "IDXError", "read_idx", "write_idx",
]
