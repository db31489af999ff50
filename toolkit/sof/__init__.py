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
from toolkit.sof.render import bind_code, render_label_maps

__all__ = [
    "MODEL_PRESETS",
    "LossWeights",
    "PhiWeights",
    "RenderResult",
    "SOFLosses",
    "SOFModel",
    "SOFModelConfig",
    "SofDataset",
    "Split",
    "bind_code",
    "convert_celebamask",
    "load_exclusions",
    "load_original_state_dict",
    "make_split",
    "model_config",
    "read_dataset",
    "render_label_maps",
    "save_exclusions",
    "sof_losses",
    "validate_dataset",
]
