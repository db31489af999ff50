"""Two CPU processes (gloo, launched by torchrun) against one process on the same global batch."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import toolkit

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.xdist_group("ddp")  # one xdist worker runs the module fixture once


def _worker_module():
    spec = importlib.util.spec_from_file_location("_ddp_worker", HERE / "_ddp_worker.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(Path(toolkit.__file__).parent.parent), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "_ddp_worker.py"), str(out)]
    # Own session, so a hung run can be killed with its workers.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{log[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed:\n{log[-4000:]}"
    ranks = [torch.load(out / f"result_rank{r}.pt", weights_only=False) for r in range(2)]
    return out, ranks


@pytest.mark.parametrize("combo", ["batch_fn-wrap", "batch_fn-allreduce", "dataset-wrap"])
def test_two_ranks_match_one_process(ddp_run, combo, tmp_path):
    _, ranks = ddp_run
    assert ranks[0]["world_size"] == 2
    worker = _worker_module()
    single = worker.run_combo(None, *combo.split("-"))
    # each rank trained on its own half of every global batch
    for step, x in enumerate(single["inputs"]):
        halves = [r[combo]["inputs"][step] for r in ranks]
        assert [h.shape[0] for h in halves] == [4, 4]
        assert torch.equal(torch.cat(halves), x), f"step {step + 1}: rank slices do not form the global batch"
    for rank in ranks:
        got = rank[combo]
        assert len(got["grads"]) == len(single["grads"]) == 4
        for step, (g_ddp, g_one) in enumerate(zip(got["grads"], single["grads"])):
            for name in g_one:
                torch.testing.assert_close(g_ddp[name], g_one[name], atol=1e-6, rtol=0,
                                           msg=lambda m, s=step, n=name: f"step {s + 1}, {n}: {m}")
        for name, p in single["params"].items():
            torch.testing.assert_close(got["params"][name], p, atol=1e-6, rtol=0)
        # logged values are averaged over ranks: the mean of the two half-batch losses = the global loss
        losses_ddp = [r["loss"] for r in got["history"] if r["split"] == "train"]
        losses_one = [r["loss"] for r in single["history"] if r["split"] == "train"]
        torch.testing.assert_close(torch.tensor(losses_ddp), torch.tensor(losses_one), atol=1e-6, rtol=0)
    # both ranks hold identical parameters
    for name, p in ranks[0][combo]["params"].items():
        assert torch.equal(p, ranks[1][combo]["params"][name])


def test_only_rank0_writes(ddp_run):
    out, _ = ddp_run
    assert not (out / "writes_rank1.txt").exists(), (out / "writes_rank1.txt").read_text()
    written = (out / "writes_rank0.txt").read_text().split()
    assert any(w.endswith("step_00000004.pt") for w in written)
    ckdir = out / "batch_fn-wrap" / "checkpoints"
    assert sorted(p.name for p in ckdir.iterdir()) == ["latest.json", "step_00000002.pt", "step_00000004.pt"]
    ck = torch.load(ckdir / "step_00000004.pt", weights_only=True)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2  # RNG states of both ranks
    assert not any(k.startswith("module.") for k in ck["model"])  # unwrapped state dict


def test_resume_under_ddp_is_exact(ddp_run):
    _, ranks = ddp_run
    for rank in ranks:
        full, resumed = rank["dataset-wrap"], rank["resumed"]
        for name, p in full["params"].items():
            assert torch.equal(resumed["params"][name], p), name
        assert resumed["history"] == full["history"]


def test_miou_accumulator_all_reduce(ddp_run):
    from toolkit.metrics import segmentation_miou

    _, ranks = ddp_run
    one = segmentation_miou(*_worker_module().miou_labels(), 4)
    for rank in ranks:
        for a, b in zip(rank["miou"], one):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
