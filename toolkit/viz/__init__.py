"""Figures (matplotlib), 3D scenes (plotly) and widgets (ipywidgets, with static fallbacks).

The top layer: it shows what the systems compute and is imported by nothing below it (the trainer's
:class:`toolkit.training.LivePlot` calls :func:`plot_history` when it draws). The names notebooks use are
re-exported here; whether a widget frontend is attached is :func:`toolkit.viz.frontend.has_widget_frontend`.
"""
from __future__ import annotations

from toolkit.viz.animation import (
    as_frames,
    bars_figure,
    curves_figure,
    embedding_figure,
    mesh_animation,
    mesh_grid_animation,
)
from toolkit.viz.frontend import has_widget_frontend
from toolkit.viz.plots import add_legend, label_grid, plot_history, point_cloud_views
from toolkit.viz.scenes import (
    Figure3D,
    camera_frusta_figure,
    mesh_trace,
    point_cloud_animation,
    point_cloud_trace,
    scene_figure,
)
from toolkit.viz.slicer import SlicerInstance, VolumeSlicer, occupancy_slicer, volume_slicer
from toolkit.viz.sof_figures import (
    bic_figure,
    class_iou_figure,
    confusion_figure,
    fit_figure,
    label_statistics_figure,
    meshes_figure,
    miou_curve_figure,
)
from toolkit.viz.widgets import curation_widget

__all__ = [
    "Figure3D", "SlicerInstance", "VolumeSlicer", "add_legend", "as_frames", "bars_figure", "bic_figure",
    "camera_frusta_figure", "class_iou_figure", "confusion_figure", "curation_widget", "curves_figure",
    "embedding_figure", "fit_figure", "has_widget_frontend", "label_grid", "label_statistics_figure",
    "mesh_animation", "mesh_grid_animation", "mesh_trace", "meshes_figure", "miou_curve_figure", "occupancy_slicer",
    "plot_history",
    "point_cloud_animation", "point_cloud_trace", "point_cloud_views", "scene_figure", "volume_slicer",
]
