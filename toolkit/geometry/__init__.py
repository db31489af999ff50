"""Geometry shared by both systems: cameras, boxes and grids, point fields, slicing, meshing.

Layered above the kernels only (it imports nothing of the systems): ``cameras`` (OpenCV convention, rays,
camera paths), ``grids`` (boxes, lattices, planes, chunked field evaluation), ``fields`` (the point-field
contract every consumer is written against), ``slicing`` (label and probability images of a field on a
plane) and ``meshing`` (MISE, marching cubes with an explicit backend, one validated
:class:`MeshingOptions`, mesh files). The names notebooks use are re-exported here.
"""
from __future__ import annotations

from toolkit.geometry.cameras import (
    CAMERA_PATHS,
    PROJECTIONS,
    camera_path,
    default_intrinsics,
    look_at,
    orbit_cameras,
    portrait_intrinsics,
)
from toolkit.geometry.fields import FunctionField, PointField, TimeField, as_point_field, field_at
from toolkit.geometry.grids import Bounds, Box, box, evaluate_field, grid_points, plane_points
from toolkit.geometry.meshing import (
    MC_IMPLS,
    GridResult,
    Mesh,
    MeshingOptions,
    MeshResult,
    dense_grid,
    extract_mesh,
    label_vertices,
    load_mesh,
    marching_cubes,
    mesh_stats,
    meshing_options,
    mise_grid,
    save_mesh,
)
from toolkit.geometry.slicing import SliceResult, camera_plane_points, slice_camera_plane, slice_field

__all__ = [
    "CAMERA_PATHS", "MC_IMPLS", "PROJECTIONS", "Bounds", "Box", "FunctionField", "GridResult", "Mesh", "MeshResult",
    "MeshingOptions", "PointField", "SliceResult", "TimeField", "as_point_field", "box", "camera_path",
    "camera_plane_points", "default_intrinsics", "dense_grid", "evaluate_field", "extract_mesh", "field_at",
    "grid_points", "label_vertices", "load_mesh", "look_at", "marching_cubes", "mesh_stats", "meshing_options",
    "mise_grid", "orbit_cameras", "plane_points", "portrait_intrinsics", "save_mesh", "slice_camera_plane",
    "slice_field",
]
