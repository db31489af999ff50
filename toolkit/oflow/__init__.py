"""Occupancy Flow: D-FAUST data, occupancy network at t=0 plus a neural-ODE velocity field, training, generation.

The names notebooks and the command line use are re-exported here.
"""
from __future__ import annotations

from toolkit.oflow.data import SequenceDataset, pack_sequence, validate_dataset
from toolkit.oflow.evaluate import evaluate_checkpoint, format_table, reconstruct_sequence
from toolkit.oflow.generate import (
    MeshSequence,
    load_mesh_sequence,
    reconstruct,
    reconstruct_per_frame,
    save_mesh_sequence,
)
from toolkit.oflow.latent import encode_latent_table, interpolate_motion, interpolate_shape, transfer_motion
from toolkit.oflow.losses import OFlowLosses, compute_losses
from toolkit.oflow.model import (
    PRESETS,
    Codes,
    OccupancyFlow,
    OFlowConfig,
    build_model,
    infer_config,
    load_checkpoint,
    preset,
)
from toolkit.oflow.occupancy import write_occupancy_from_scan
from toolkit.oflow.ode import ODE_PRESETS, ODEOptions, SolveStats, transport, transport_forward
from toolkit.oflow.pretrained import AUTHORS_MODELS, load_authors_model
from toolkit.oflow.train import OFlowTrainConfig, load_oflow, load_pretrained

__all__ = [
    "AUTHORS_MODELS",
    "ODE_PRESETS",
    "PRESETS",
    "Codes",
    "MeshSequence",
    "ODEOptions",
    "OFlowConfig",
    "OFlowLosses",
    "OFlowTrainConfig",
    "OccupancyFlow",
    "SequenceDataset",
    "SolveStats",
    "build_model",
    "compute_losses",
    "encode_latent_table",
    "evaluate_checkpoint",
    "format_table",
    "infer_config",
    "interpolate_motion",
    "interpolate_shape",
    "load_authors_model",
    "load_checkpoint",
    "load_mesh_sequence",
    "load_oflow",
    "load_pretrained",
    "pack_sequence",
    "preset",
    "reconstruct",
    "reconstruct_per_frame",
    "reconstruct_sequence",
    "save_mesh_sequence",
    "transfer_motion",
    "transport",
    "transport_forward",
    "validate_dataset",
    "write_occupancy_from_scan",
]
