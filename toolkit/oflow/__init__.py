"""Occupancy Flow: D-FAUST data, occupancy network at t=0 plus a neural-ODE velocity field, training, generation.

The names notebooks and the command line use are re-exported here.
"""
from __future__ import annotations

from toolkit.oflow.data import SequenceDataset, pack_sequence, validate_dataset
from toolkit.oflow.evaluate import evaluate_checkpoint, format_table, reconstruct_sequence
from toolkit.oflow.generate import MeshSequence, load_mesh_sequence, reconstruct, reconstruct_per_frame, save_mesh_sequence
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
from toolkit.oflow.train import OFlowTrainConfig, load_oflow, load_pretrained

__all__ = [
    "SequenceDataset", "pack_sequence", "validate_dataset", "OFlowLosses", "compute_losses", "PRESETS", "Codes",
    "OccupancyFlow", "OFlowConfig", "build_model", "infer_config", "load_checkpoint", "preset",
    "write_occupancy_from_scan", "ODE_PRESETS", "ODEOptions", "SolveStats", "transport", "transport_forward",
    "evaluate_checkpoint", "format_table", "reconstruct_sequence", "MeshSequence", "load_mesh_sequence", "reconstruct",
    "reconstruct_per_frame", "save_mesh_sequence", "encode_latent_table", "interpolate_motion", "interpolate_shape",
    "transfer_motion", "OFlowTrainConfig", "load_oflow", "load_pretrained",
]
