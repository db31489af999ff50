"""Triton kernels, each beside its plain-PyTorch reference and a dispatcher (see the style guide, item 7).

- ``toolkit.kernels.nearest_neighbor``: fused nearest neighbours / Chamfer correspondences without an
  N x M distance matrix (``nearest_neighbor``, ``nearest_neighbor_reference``, ``nearest_neighbor_auto``,
  ``chamfer``, and ``nearest_neighbor_backend`` for ``toolkit.metrics``).
- ``toolkit.kernels.marching_cubes``: marching cubes on the GPU, giving exactly PyMCubes' mesh in lattice-index
  units (``marching_cubes``, ``marching_cubes_reference``, ``marching_cubes_auto``); world coordinates and the
  backend choice are ``toolkit.geometry.meshing.marching_cubes``'s.

The kernels are the bottom layer: they import nothing else of the toolkit. Dispatchers use a kernel when it can run (CUDA tensors and triton importable, or ``TRITON_INTERPRET=1`` set
for the CPU interpreter) and otherwise fall back to the reference with one warning. Importing this package
never imports triton. The kernel launchers themselves are not re-exported here because they share their
modules' names; import them from the modules.
"""
from __future__ import annotations

from toolkit.kernels.marching_cubes import (
    MarchingCubesResult,
    marching_cubes_auto,
    marching_cubes_reference,
)
from toolkit.kernels.nearest_neighbor import (
    ChamferNN,
    NNResult,
    chamfer,
    nearest_neighbor_auto,
    nearest_neighbor_backend,
    nearest_neighbor_reference,
)

__all__ = [
    "ChamferNN", "MarchingCubesResult", "NNResult", "chamfer", "marching_cubes_auto", "marching_cubes_reference",
    "nearest_neighbor_auto", "nearest_neighbor_backend", "nearest_neighbor_reference",
]
