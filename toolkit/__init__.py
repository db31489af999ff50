"""Implicit occupancy fields toolkit: SOF (SofGAN's Semantic Occupancy Field) and Occupancy Flow.

Sub-packages:
    toolkit.sof        semantic occupancy field: data format, model, training, rendering
    toolkit.oflow      Occupancy Flow: D-FAUST data, model, ODE transport, generation
    toolkit.synthetic  procedural portraits and moving bodies with exact 3D ground truth
    toolkit.geometry   cameras (OpenCV convention) and meshing
    toolkit.kernels    Triton kernels beside their plain-PyTorch references
"""
from __future__ import annotations

__version__ = "0.1.0"
