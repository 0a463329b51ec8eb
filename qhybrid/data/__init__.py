"""Fundus images in: the built-in synthetic generator, loaders for image folders and .npz files,
realistic degradations, and the array <-> tensor transforms. Knows nothing of models."""

from qhybrid.data.loaders import (
    DataError,
    DataWarning,
    FundusDataset,
    load_dataset,
    load_images,
)
from qhybrid.data.synthetic import SyntheticFundus

__all__ = ["DataError", "DataWarning", "FundusDataset", "SyntheticFundus", "load_dataset", "load_images"]
