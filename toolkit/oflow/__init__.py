"""Occupancy Flow: D-FAUST data, occupancy network at t=0 plus a neural-ODE velocity field, training, generation.

The names notebooks and the command line use are re-exported here (the package face); the modules behind
it are data, occupancy (scan labels), model, ode, losses, checkpoint, train (the run lifecycle's
``SYSTEM``), evaluate, fields (the occupancy at time t as a point field, its slicer), generate (MISE +
propagation), latent (interpolation, motion transfer) and pretrained (the authors' models). No name here
shadows a module: ``toolkit.oflow.train`` stays the module, its ``train`` function is ``train_oflow``.
"""
from __future__ import annotations

from toolkit.oflow.checkpoint import LoadedOFlow, export_checkpoint, load_oflow
from toolkit.oflow.data import (
    SequenceDataset,
    find_sequences,
    normalize_to_frame0,
    pack_sequence,
    read_sequence,
    validate_dataset,
)
from toolkit.oflow.evaluate import (
    evaluate_model,
    format_table,
    occupancy_figure,
    predict_window,
    reconstruct_sequence,
    window_codes,
)
from toolkit.oflow.fields import OccupancyField, occupancy_fields, occupancy_meshing
from toolkit.oflow.generate import (
    FrameMeshes,
    MeshSequence,
    average_metrics,
    evaluate_mesh_sequence,
    evaluation_windows,
    format_metrics,
    format_timings,
    load_mesh_sequence,
    reconstruct,
    reconstruct_per_frame,
    save_mesh_sequence,
)
from toolkit.oflow.latent import (
    LatentTable,
    encode_latent_table,
    identity_name,
    interpolate_motion,
    interpolate_shape,
    latent_codes,
    motion_embedding,
    pick_pair,
    synthetic_transfer_case,
    trajectory_error,
    transfer_motion,
)
from toolkit.oflow.latent_eval import (
    evaluate_latent,
    latent_figures,
    motion_retrieval,
    real_motion_gain,
    transfer_scores,
)
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
from toolkit.oflow.occupancy import derive_scan_occupancy, write_occupancy_from_scan
from toolkit.oflow.ode import ODE_PRESETS, ODEOptions, SolveStats, transport, transport_forward
from toolkit.oflow.pretrained import AUTHORS_MODELS, load_authors_model
from toolkit.oflow.train import (
    RECIPES,
    SYSTEM,
    OFlowTrainConfig,
    evaluate_checkpoint,
    evaluation_dataset,
    load_pretrained,
    prepare_data,
    prepare_scan_sequence,
    shipped_checkpoint,
    staged_configs,
    training_data,
)
from toolkit.oflow.train import train as train_oflow

__all__ = [
    "AUTHORS_MODELS",
    "ODE_PRESETS",
    "PRESETS",
    "RECIPES",
    "SYSTEM",
    "Codes",
    "FrameMeshes",
    "LatentTable",
    "LoadedOFlow",
    "MeshSequence",
    "ODEOptions",
    "OFlowConfig",
    "OFlowLosses",
    "OFlowTrainConfig",
    "OccupancyField",
    "OccupancyFlow",
    "SequenceDataset",
    "SolveStats",
    "average_metrics",
    "build_model",
    "compute_losses",
    "derive_scan_occupancy",
    "encode_latent_table",
    "evaluate_checkpoint",
    "evaluate_latent",
    "evaluate_mesh_sequence",
    "evaluate_model",
    "evaluation_dataset",
    "evaluation_windows",
    "export_checkpoint",
    "find_sequences",
    "format_metrics",
    "format_table",
    "format_timings",
    "identity_name",
    "infer_config",
    "interpolate_motion",
    "interpolate_shape",
    "latent_codes",
    "latent_figures",
    "load_authors_model",
    "load_checkpoint",
    "load_mesh_sequence",
    "load_oflow",
    "load_pretrained",
    "motion_embedding",
    "motion_retrieval",
    "normalize_to_frame0",
    "occupancy_fields",
    "occupancy_figure",
    "occupancy_meshing",
    "pack_sequence",
    "pick_pair",
    "predict_window",
    "prepare_data",
    "prepare_scan_sequence",
    "preset",
    "read_sequence",
    "real_motion_gain",
    "reconstruct",
    "reconstruct_per_frame",
    "reconstruct_sequence",
    "save_mesh_sequence",
    "shipped_checkpoint",
    "staged_configs",
    "synthetic_transfer_case",
    "train_oflow",
    "training_data",
    "trajectory_error",
    "transfer_motion",
    "transfer_scores",
    "transport",
    "transport_forward",
    "validate_dataset",
    "window_codes",
    "write_occupancy_from_scan",
]
