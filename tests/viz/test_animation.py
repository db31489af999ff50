"""Mesh-sequence animations (toolkit.viz.animation): frames, display reduction, static fallback."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from toolkit.geometry.meshing import extract_mesh
from toolkit.oflow.generate import MeshSequence, correspondence_colors
from toolkit.viz import animation as A


def translated_sphere(frames=5, resolution0=16, upsampling_steps=2):
    mesh = extract_mesh(lambda p: 0.3 - p.norm(dim=-1), resolution0=resolution0, upsampling_steps=upsampling_steps).mesh
    t = np.linspace(0, 1, frames, dtype=np.float32)
    shift = np.array([0.2, -0.1, 0.05], np.float32)
    verts = mesh.vertices[None] + t[:, None, None] * shift
    return MeshSequence(verts, mesh.faces, t, {}, {}), shift


def test_as_frames_keeps_correspondence_through_display_reduction():
    seq, shift = translated_sphere()
    full = A.as_frames(seq, max_faces=None)
    assert len(full.vertices) == 5 and full.faces[0] is seq.faces
    np.testing.assert_array_equal(full.colors[0], correspondence_colors(seq.vertices[0]))
    small = A.as_frames(seq, max_faces=1000)
    assert len(small.faces[0]) <= 1000 < len(seq.faces)
    # clusters are fixed at t=0, so the reduced mesh is translated exactly like the full one
    for k, t in enumerate(seq.times):
        np.testing.assert_allclose(small.vertices[k], small.vertices[0] + t * shift, atol=1e-5)
    assert small.faces[0].max() < len(small.vertices[0])


def test_plotly_animation_has_a_frame_and_slider_step_per_time():
    seq, _ = translated_sphere()
    fig = A.mesh_animation(seq, static=False, max_faces=2000)
    assert len(fig.frames) == 5 and len(fig.layout.sliders[0].steps) == 5
    first = np.asarray(fig.frames[0].data[0].x)
    last = np.asarray(fig.frames[-1].data[0].x)
    np.testing.assert_allclose(last - first, 0.2, atol=1e-5)  # x moves by the shift's 0.2


def test_grid_static_fallback_and_errors():
    import matplotlib.figure

    seq, _ = translated_sphere(frames=3)
    empty = MeshSequence(np.zeros((3, 0, 3), np.float32), np.zeros((0, 3), np.int64), seq.times, {}, {})
    points = torch.rand(3, 50, 3).numpy()
    fig = A.mesh_grid_animation([[seq, empty], [points, None]], row_labels=["a", "b"], col_labels=["x", "y"],
                                static=True)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 3 * 3
    fig = A.mesh_grid_animation([[seq, points, empty]], static=False)
    assert len(fig.frames) == 3 and len(fig.data) == 3
    four, _ = translated_sphere(frames=4)
    with pytest.raises(ValueError, match="same number of frames"):
        A.mesh_grid_animation([[seq, four]], static=False)
    with pytest.raises(ValueError, match="empty"):
        A.mesh_grid_animation([[]])


def test_3d_figures_carry_a_static_png_for_saved_notebooks():
    import base64
    import io

    from PIL import Image

    from toolkit.viz.scenes import Figure3D, point_cloud_animation

    seq, _ = translated_sphere()
    fig = A.mesh_animation(seq, static=False, max_faces=2000)
    assert isinstance(fig, Figure3D) and len(fig.frames) == 5  # plotly attributes pass through
    bundle = fig._repr_mimebundle_()
    assert "application/vnd.plotly.v1+json" in bundle
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(bundle["image/png"]))).convert("RGB"))
    assert png.shape[0] > 100 and (png < 200).any()  # something besides the white background is drawn
    cloud = point_cloud_animation(torch.rand(3, 200, 3).numpy())
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(cloud._repr_mimebundle_()["image/png"]))).convert("RGB"))
    assert (png < 200).any()
