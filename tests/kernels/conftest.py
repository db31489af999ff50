"""Kernel tests: Triton kernels run on the CPU interpreter when no GPU is present, compiled on a GPU.

Triton fixes its mode (interpreter or GPU compiler) when it is first imported, and the dispatchers run
kernels on CPU tensors only when TRITON_INTERPRET=1 is set. So:

- at collection, on a machine without CUDA, this file imports triton once with TRITON_INTERPRET=1 set for
  that import only; the environment is restored at once, so nothing leaks into other test folders (only
  triton's own mode is fixed for this worker process, and without a GPU the interpreter is the one mode
  in which kernels can run at all);
- the ``interpreter`` fixture sets TRITON_INTERPRET=1 for one test alone (monkeypatch), the explicit
  opt-in the dispatchers look for; with CUDA present it skips, the ``cuda`` cases cover the kernels;
- the ``cuda`` fixture clears TRITON_INTERPRET for one test and skips without a GPU; ``kernel_device``
  runs a test both ways, so each machine runs the half it can;
- ``no_interpreter`` clears it and forgets earlier fallback warnings, to test the fallback itself.

Compilation for the H100 (sm_90) is checked without a GPU by a subprocess (``aot_compile``), whose triton
is imported in compiler mode.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from toolkit.kernels import _dispatch

HAS_CUDA = torch.cuda.is_available()


def _import_triton_in_interpreter_mode() -> None:
    if HAS_CUDA or "triton" in sys.modules:
        return
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401
    except ImportError:
        pass  # the fixtures skip with the reason
    finally:
        if old is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = old


_import_triton_in_interpreter_mode()


@pytest.fixture
def interpreter(monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """CPU device, with TRITON_INTERPRET=1 set for this test; skips when the interpreter cannot run."""
    if HAS_CUDA:
        pytest.skip("CUDA is present: the kernels are tested compiled by the cuda cases")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reason = _dispatch.triton_unavailable_reason(torch.zeros(1))
    if reason is not None:
        pytest.skip(f"Triton interpreter unavailable: {reason}")
    return torch.device("cpu")


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """CUDA device for compiled kernels; skips without a GPU or triton."""
    if not HAS_CUDA:
        pytest.skip("needs a CUDA GPU")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = _dispatch.triton_unavailable_reason(torch.zeros(1, device="cuda"))
    if reason is not None:
        pytest.skip(reason)
    return torch.device("cuda")


@pytest.fixture(params=["interpreter", "cuda"])
def kernel_device(request: pytest.FixtureRequest) -> torch.device:
    """Both ways to run a kernel: the CPU interpreter (no GPU) and compiled on CUDA (GPU present)."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def no_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRITON_INTERPRET unset and no fallback warned about yet, for this test."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(_dispatch, "_warned", set())


@pytest.fixture
def aot_compile():
    """``aot_compile(body)``: run ``body`` in a fresh Python whose triton is in compiler mode, where
    ``compile(fn, signature, constexprs, num_warps)`` builds a kernel for sm_90 (H100) without a GPU.
    Skips when triton or its NVIDIA backend is missing."""
    return _aot_compile


def _aot_compile(body: str) -> None:
    script = textwrap.dedent("""
        import sys
        try:
            import triton
            from triton.backends.compiler import GPUTarget
            import triton.backends.nvidia  # noqa: F401
        except ImportError as exc:
            print("SKIP", exc)
            sys.exit(0)

        def compile(fn, signature, constexprs, num_warps):
            src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
            kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
            assert kernel.asm["cubin"], fn
    """) + textwrap.dedent(body) + "\nprint('COMPILED')\n"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    if out.stdout.startswith("SKIP"):
        pytest.skip(f"triton's NVIDIA backend is unavailable: {out.stdout[5:].strip()}")
    assert out.returncode == 0 and "COMPILED" in out.stdout, out.stderr[-3000:]
