"""Latent-space figures of a generative model: retrieval with identities held out on hand-made codes, and
motion transfer scored against the exact answer (a motion transferred onto its own body is the model's
own reconstruction)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from toolkit.oflow.data import SequenceDataset
from toolkit.oflow.latent import LatentTable
from toolkit.oflow.latent_eval import motion_retrieval, real_motion_gain, transfer_scores
from toolkit.oflow.model import build_model


def _table(rows):
    """rows: (sequence, z_t) pairs."""
    names = tuple(r[0] for r in rows)
    zt = np.array([r[1] for r in rows], np.float32)
    return LatentTable(names, tuple(n.split("_", 1)[1] for n in names), np.zeros(len(rows), np.int64),
                       np.zeros_like(zt), zt, np.zeros_like(zt), np.zeros_like(zt))


def test_retrieval_on_hand_made_codes():
    reference = _table([("1_hop", (0.0, 0.0)), ("2_hop", (0.2, 0.0)), ("1_wave", (10.0, 0.0)),
                        ("2_wave", (10.2, 0.0)), ("3_wave", (1.0, 0.0))])
    query = _table([("3_hop", (1.1, 0.0)), ("3_wave", (9.0, 0.0)), ("4_wave", (0.5, 0.0))])
    r = motion_retrieval(reference, query)
    # 3_hop is nearest to 3_wave, its own identity, which is never matched: it finds 2_hop instead;
    # 4_wave sits among the hop codes: a miss
    assert r.predicted == ("hop", "wave", "hop") and r.truth == ("hop", "wave", "wave")
    assert r.accuracy == pytest.approx(2 / 3) and r.chance == 0.5


@pytest.fixture(scope="module")
def bodies(tmp_path_factory):
    from toolkit.synthetic.bodies import write_body_dataset

    root = write_body_dataset(tmp_path_factory.mktemp("latent") / "b", sequences=4, frames=8, n_points=64, n_pcl=400,
                              n_near=0, mesh_resolution=16, progress=False)
    return root


def test_transfer_onto_its_own_body_is_the_models_own_reconstruction(bodies):
    torch.manual_seed(0)
    model = build_model("generative", seq_len=5, z_dim=8, latent_hidden=16, latent_blocks=1, decoder_hidden=16, decoder_blocks=1,
        vf_hidden=16, vf_blocks=1).eval()
    ds = SequenceDataset(bodies, eval=True, occupancy=False, length=5, n_input_points=100, input_noise=0.0)
    own_body = ds.sequences[ds.windows[0][0]].path
    other_body = next(s.path for s in ds.sequences if s.name.split("_")[0] != own_body.name.split("_")[0])
    rows = transfer_scores(model, ds, [(0, own_body), (0, other_body)], n_points=300)
    same, cross = rows
    assert same["transfer"] == same["own"] and same["source"] == same["target"]
    assert cross["source"] != cross["target"] and cross["static"] > 0
    assert cross["own"] == pytest.approx(same["own"])  # the same source window and motion code


def test_real_gain_of_a_model_that_moves_nothing(tmp_path):
    from toolkit.oflow._sphere import write_moving_sphere_dataset

    root = write_moving_sphere_dataset(tmp_path / "s", sequences=("s0",), frames=5, n_points=64, n_pcl=256)
    model = build_model("generative", seq_len=5, z_dim=4, latent_hidden=8, latent_blocks=1, decoder_hidden=8,
                        decoder_blocks=1, vf_hidden=8, vf_blocks=1).eval()
    with torch.no_grad():
        model.vector_field.fc_out.weight.zero_()
        model.vector_field.fc_out.bias.zero_()
    gain = real_motion_gain(model, root / "s0", n_points=100, n_input_points=64)
    assert gain["own"] == pytest.approx(gain["static"]) and gain["gain"] == pytest.approx(0.0, abs=1e-6)
    assert gain["static"] > 0.05  # the sphere moves: 0.5 x (frames 1..4) / 4 on average in frame-0 units


def test_cli_eval_oflow_latent_writes_the_figures(tmp_path, capsys):
    import json

    from toolkit.cli import main
    from toolkit.synthetic.bodies import write_body_dataset

    root = write_body_dataset(tmp_path / "b", sequences=8, frames=6, n_points=64, n_pcl=300, n_near=0,
                              mesh_resolution=16, progress=False)
    model = build_model("generative", seq_len=5, z_dim=4, latent_hidden=8, latent_blocks=1, decoder_hidden=8,
                        decoder_blocks=1, vf_hidden=8, vf_blocks=1)
    ckpt = tmp_path / "gen.pt"
    torch.save({"model": model.state_dict(), "meta": {"system": "oflow", "model_config": model.config.to_dict(),
                                                      "train_config": {"n_input_points": 64, "input_noise": 0.0}}},
               ckpt)
    out = tmp_path / "latent.json"
    assert main(["eval", "oflow-latent", str(ckpt), str(root), "--json", str(out), "--pairs", "2"]) == 0
    res = json.loads(out.read_text())
    assert res["pairs"] == 2 and 0 < res["chance"] <= 0.5 and 0 <= res["retrieval_accuracy"] <= 1
    assert res["transfer_error_ratio"] > 0 and res["transfer_vs_own"] > 0 and res["query_windows"] >= 1
    assert json.loads(capsys.readouterr().out) == res  # printed first
    assert main(["eval", "sof", str(ckpt), str(root), "--real", str(root)]) == 2
    assert "--real apply to oflow-latent only" in capsys.readouterr().err
