"""SOF, the Semantic Occupancy Field of SofGAN: data format, model, training, rendering, slicing, meshing.

The names notebooks and the command line use are re-exported here (the package face); the modules behind
it are data, model, losses, checkpoint, train (stage 1 and 2, the run lifecycle's ``SYSTEM``), fit,
evaluation, render and semantic_mesh. (No name here shadows a module: ``toolkit.sof.train`` stays the
module.)
"""
from __future__ import annotations

from toolkit.sof.checkpoint import LoadedSof, export_checkpoint, load_sof
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
from toolkit.sof.evaluation import (
    checkpoint_curve,
    class_iou_table,
    fit_single_views,
    new_portraits,
    run_checkpoints,
    run_folder,
    validation_history,
)
from toolkit.sof.fit import fit_masks
from toolkit.sof.losses import LossWeights, SOFLosses, sof_losses
from toolkit.sof.model import (
    MODEL_PRESETS,
    PhiWeights,
    RenderResult,
    SOFModel,
    SOFModelConfig,
    load_original_state_dict,
    model_config,
)
from toolkit.sof.render import (
    BoundField,
    bind_code,
    clean_small_regions,
    frontal_camera,
    path_cameras,
    render_grid,
    render_label_maps,
    save_label_animation,
    save_label_sequence,
    view_intrinsics,
)
from toolkit.sof.semantic_mesh import (
    class_meshes,
    dense_class_meshes,
    extract_semantic_mesh,
    label_histogram,
    merge_meshes,
)
from toolkit.sof.train import (
    SYSTEM,
    SofTrainConfig,
    evaluate_checkpoint,
    evaluate_views,
    fit_codes,
    load_pretrained,
    render_views,
    shipped_checkpoint,
    train_multiview,
    training_data,
)

__all__ = [
    "MODEL_PRESETS",
    "SYSTEM",
    "BoundField",
    "LoadedSof",
    "LossWeights",
    "PhiWeights",
    "RenderResult",
    "SOFLosses",
    "SOFModel",
    "SOFModelConfig",
    "SofDataset",
    "SofTrainConfig",
    "Split",
    "bind_code",
    "checkpoint_curve",
    "class_iou_table",
    "class_meshes",
    "clean_small_regions",
    "convert_celebamask",
    "dense_class_meshes",
    "evaluate_checkpoint",
    "evaluate_views",
    "export_checkpoint",
    "extract_semantic_mesh",
    "fit_codes",
    "fit_masks",
    "fit_single_views",
    "frontal_camera",
    "label_histogram",
    "load_exclusions",
    "load_original_state_dict",
    "load_pretrained",
    "load_sof",
    "make_split",
    "merge_meshes",
    "model_config",
    "new_portraits",
    "path_cameras",
    "read_dataset",
    "render_grid",
    "render_label_maps",
    "render_views",
    "run_checkpoints",
    "run_folder",
    "save_exclusions",
    "save_label_animation",
    "save_label_sequence",
    "shipped_checkpoint",
    "sof_losses",
    "train_multiview",
    "training_data",
    "validate_dataset",
    "validation_history",
    "view_intrinsics",
]
