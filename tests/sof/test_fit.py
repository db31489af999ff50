"""`fit sof`: users' own masks fitted into a trained model with the full-settings config (a few steps),
its outputs, and one clear line for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.cli import main as cli_main
from toolkit.config import load_config_dict
from toolkit.io import DataError
from toolkit.paths import DATA_DIR
from toolkit.sof.fit import fit_masks
from toolkit.sof.train import load_sof

SHIPPED = DATA_DIR / "sof_synthetic.pt"


@pytest.fixture(scope="module")
def real_fit(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "out"
    # the packaged schedule in miniature: codes, pose and alignment for 2 steps, then the networks too
    report = fit_masks(SHIPPED, shared_data / "celebamask_hq_masks", out, overrides=["max_steps=4", "unfreeze_at=2"],
                       progress=False)
    return out, report


def test_the_fit_config_has_no_depth_supervision():
    # Real masks have no depth maps: a config inheriting depth supervision crashed notebook 02 before.
    assert not load_config_dict("sof", "fit_masks").get("loss", {}).get("depth_supervision")


@pytest.mark.realdata
def test_fit_real_masks_with_the_full_settings_config(real_fit):
    out, report = real_fit
    assert json.loads((out / "fit.json").read_text()) == report
    assert sorted(report["masks"]) == ["0", "1"] and report["steps"] == 4 and report["networks_tuned_from"] == 2
    for stem, m in report["masks"].items():
        assert 0.0 <= m["miou_foreground"] <= 1.0 and 0.0 <= m["pixel_accuracy"] <= 1.0
        assert 0.0 <= m["miou_foreground_codes_only"] <= 1.0
        assert {"skin", "hair", "l_eye", "r_eye", "u_lip"} <= set(m["per_class_iou"])
        assert set(m["alignment"]) == {"yaw", "pitch", "log_scale", "shift_x", "shift_y", "roll"}
        for rel in m["renders"]:
            assert (out / rel).is_file(), rel
        ids = np.array(Image.open(out / "renders" / f"{stem}_fitted_ids.png"))
        assert ids.shape == (128, 128) and ids.max() < 20
    codes = np.load(out / "codes.npz")
    assert codes["codes"].shape[0] == 2 and codes["cam2world"].shape == (2, 4, 4)
    fitted = load_sof(out / "fit.pt")
    torch.testing.assert_close(fitted.model.latent_codes.weight, torch.from_numpy(codes["codes"]))
    assert fitted.cameras is not None and fitted.cameras.similarity.shape == (2, 4)
    base = load_sof(SHIPPED).model.state_dict()
    tuned = [k for k, w in fitted.model.state_dict().items() if k != "latent_codes.weight" and not torch.equal(w, base[k])]
    assert tuned and all(k.startswith(("hypernets", "marcher", "classifier")) for k in tuned), tuned[:5]
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no partial folder left


@pytest.mark.realdata
def test_existing_output_is_kept_unless_overwrite(real_fit, shared_data, capsys):
    out, _ = real_fit
    before = (out / "fit.json").read_bytes()
    code = cli_main(["fit", "sof", str(SHIPPED), str(shared_data / "celebamask_hq_masks"), str(out),
                     "--set", "max_steps=1"])
    err = capsys.readouterr().err
    assert code == 1 and "output folder exists" in err and str(out) in err and "Traceback" not in err
    assert (out / "fit.json").read_bytes() == before


def _masks(tmp_path: Path, kind: str) -> Path:
    d = tmp_path / kind
    d.mkdir()
    if kind == "rgb":
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "0.png")
    elif kind == "ids":
        Image.fromarray(np.full((16, 16), 19, np.uint8)).save(d / "7.png")
    return d


@pytest.mark.parametrize("kind, pattern", [
    ("rgb", r"0\.png.*(single-channel|mode RGB)"), ("ids", r"7\.png.*19"), ("empty", r"empty.*no \.png masks"),
])
def test_bad_masks_give_one_line_naming_the_file(tmp_path, capsys, kind, pattern):
    masks = _masks(tmp_path, kind)
    code = cli_main(["fit", "sof", str(SHIPPED), str(masks), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(pattern, err), err
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_a_checkpoint_of_the_other_system_is_named(tmp_path, capsys):
    masks = _masks(tmp_path, "ids")
    oflow = DATA_DIR / "oflow_completion.pt"
    code = cli_main(["fit", "sof", str(oflow), str(masks), str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and "oflow_completion.pt" in err and "not a SOF checkpoint" in err and "Traceback" not in err
    with pytest.raises(DataError, match="not a SOF checkpoint"):
        fit_masks(oflow, masks, tmp_path / "out2")
