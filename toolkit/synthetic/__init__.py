"""Procedural data with exact ground truth: semantic portraits (SOF) and moving bodies (Occupancy Flow)."""
from __future__ import annotations

from toolkit.synthetic.bodies import Body, load_body, load_pcl_sample, write_body_dataset
from toolkit.synthetic.heads import (
    HeadParams,
    SyntheticHead,
    head_from_seed,
    load_head,
    sample_head,
    write_portrait_dataset,
)

__all__ = ["Body", "HeadParams", "SyntheticHead", "head_from_seed", "load_body", "load_head", "load_pcl_sample", "sample_head", "write_body_dataset", "write_portrait_dataset"]
