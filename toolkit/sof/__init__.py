"""SOF, the Semantic Occupancy Field of SofGAN: data format, model, training, rendering.

The names notebooks and the command line use are re-exported here.
"""
from __future__ import annotations

from toolkit.sof.data import (
    SofDataset,
    Split,
    convert_celebamask,
    load_exclusions,
    make_split,
    read_dataset,
    save_exclusions,
    validate_dataset,
)

__all__ = [
    "SofDataset", "Split", "convert_celebamask", "load_exclusions", "make_split", "read_dataset",
    "save_exclusions", "validate_dataset",
]
