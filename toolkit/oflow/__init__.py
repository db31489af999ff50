"""Occupancy Flow: D-FAUST data, occupancy network at t=0 plus a neural-ODE velocity field, training, generation.

The names notebooks and the command line use are re-exported here.
"""
from __future__ import annotations

from toolkit.oflow.data import SequenceDataset, pack_sequence, validate_dataset
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

__all__ = [
    "SequenceDataset", "pack_sequence", "validate_dataset", "OFlowLosses", "compute_losses", "PRESETS", "Codes",
    "OccupancyFlow", "OFlowConfig", "build_model", "infer_config", "load_checkpoint", "preset",
    "write_occupancy_from_scan", "ODE_PRESETS", "ODEOptions", "SolveStats", "transport", "transport_forward",
]
