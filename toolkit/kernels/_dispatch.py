"""When the Triton kernels can run, and the one-time fallback warning when they cannot.

Triton fixes its mode when it is first imported: with ``TRITON_INTERPRET=1`` in the environment its own
library functions are built for the CPU interpreter, otherwise for the GPU compiler, and the two cannot be
mixed in one process. So triton is imported lazily (importing toolkit never imports it), and a kernel
runs when the inputs are CUDA tensors, or when ``TRITON_INTERPRET=1`` is set explicitly, provided triton
was imported in the matching mode.
"""
from __future__ import annotations

import os
import warnings

import torch

IMPLS = ("auto", "triton", "reference")
_warned: set[tuple[str, str]] = set()


def interpret_requested() -> bool:
    """True when ``TRITON_INTERPRET`` is set to a true value in the environment now."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def triton_unavailable_reason(*tensors: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot run on these tensors now, or None when they can."""
    interpret = interpret_requested()
    if not interpret:
        devices = sorted({t.device.type for t in tensors})
        if devices != ["cuda"]:
            return (f"the inputs are on {'/'.join(devices)}; the Triton kernels need CUDA tensors "
                    "(or TRITON_INTERPRET=1 for the CPU interpreter)")
    try:
        import triton  # noqa: F401
        import triton.language as tl
    except ImportError as exc:  # also covers broken installs that fail inside triton
        return f"triton is not importable ({exc})"
    imported_interpreted = _is_interpreter_build(tl)
    if imported_interpreted != interpret:
        was = "with" if imported_interpreted else "without"
        return (f"triton was imported {was} TRITON_INTERPRET=1 and its mode is fixed at first import; "
                f"TRITON_INTERPRET is {'set' if interpret else 'not set'} now")
    return None


def check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f'unknown implementation "{impl}"; valid: {list(IMPLS)}')


def use_triton(op: str, impl: str, *tensors: torch.Tensor) -> bool:
    """Decide between kernel and reference for ``impl`` ("auto", "triton" or "reference").

    "auto" falls back to the reference with one warning per (op, reason) and process; "triton" raises
    RuntimeError with the reason instead.
    """
    check_impl(impl)
    if impl == "reference":
        return False
    reason = triton_unavailable_reason(*tensors)
    if reason is None:
        return True
    if impl == "triton":
        raise RuntimeError(f"{op}: the Triton kernel cannot run: {reason}")
    if (op, reason) not in _warned:
        _warned.add((op, reason))
        warnings.warn(f"{op}: using the PyTorch reference because {reason}", stacklevel=3)
    return False


def require_triton(op: str, *tensors: torch.Tensor) -> None:
    """Raise RuntimeError naming the reason when the Triton kernel of ``op`` cannot run on ``tensors``."""
    reason = triton_unavailable_reason(*tensors)
    if reason is not None:
        raise RuntimeError(f"{op}: the Triton kernel cannot run: {reason}. Use {op}_reference, or the "
                           f"dispatcher, which falls back to it.")


def _is_interpreter_build(tl) -> bool:
    # triton.language's own @jit helpers (tl.zeros, tl.min, ...) were built for the interpreter iff
    # TRITON_INTERPRET was set when triton was imported.
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)
