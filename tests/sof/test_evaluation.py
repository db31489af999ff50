"""Evaluation helpers of the mIoU notebook: checkpoint listing, tables, curves, new portraits, guards."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest

from toolkit.io import DataError
from toolkit.metrics import segmentation_miou
from toolkit.sof import evaluation as E
from toolkit.sof.model import model_config


def test_run_checkpoints_are_sorted_by_step(tmp_path):
    ckdir = tmp_path / "checkpoints"
    ckdir.mkdir()
    for name in ("step_00000010.pt", "step_00000002.pt", "latest.json", "step_3.pt.tmp"):
        (ckdir / name).write_text("x")
    assert [(s, p.name) for s, p in E.run_checkpoints(tmp_path)] == [(2, "step_00000002.pt"),
                                                                    (10, "step_00000010.pt")]
    assert E.run_checkpoints(tmp_path / "missing") == []


def test_class_table_and_records_from_metrics():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 2]])
    res = segmentation_miou(pred, gt, 20)
    # IoU: background 3/4, skin 3/5, l_brow 0/1.
    record = E.miou_record(res)
    assert record["miou"] == pytest.approx((0.75 + 0.6 + 0.0) / 3)
    assert record["miou_fg"] == pytest.approx(0.3)
    table = E.class_iou_table({"a": res, "b": segmentation_miou(gt, gt, 20)})
    lines = table.splitlines()
    assert lines[0].split() == ["class", "a", "b"]
    assert lines[1].split() == ["0", "background", "0.750", "1.000"]
    assert lines[3].split() == ["2", "l_brow", "0.000", "-"]  # absent from b's GT and prediction
    assert len(lines) == 1 + 3 + 2


def test_subset_is_even_and_ordered():
    pairs = [("a", v) for v in range(10)]
    assert E._subset(pairs, 4) == [("a", 0), ("a", 3), ("a", 6), ("a", 9)]
    assert E._subset(pairs, None) == pairs and E._subset(pairs, 20) == pairs


def test_new_portraits_reuse_and_guards(tmp_path):
    generator = {"instances": 9, "views": 2, "size": 16, "seed": 4}
    loaded = SimpleNamespace(meta={"train_config": {"synthetic": generator}},
                             model=SimpleNamespace(config=model_config("small")))
    root = E.new_portraits(loaded, tmp_path / "new", instances=1)
    first = (root / "00000" / "seg_00.png").stat().st_mtime_ns
    assert E.new_portraits(loaded, tmp_path / "new", instances=1) == root  # same settings: reused
    assert (root / "00000" / "seg_00.png").stat().st_mtime_ns == first
    import json

    assert json.loads((root / "meta.json").read_text())["seed"] == 1004  # another seed than the training data
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"format": "sof"}')
    with pytest.raises(DataError, match="not a synthetic portrait dataset"):
        E.new_portraits(loaded, tmp_path / "other", instances=1)
    with pytest.raises(DataError, match="not synthetic"):
        E.new_portraits(SimpleNamespace(meta={}, model=loaded.model), tmp_path / "x")
    # A stage-2 fit never deletes a folder that is not a run folder.
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing"):
        E.fit_single_views(tmp_path / "no.pt", root, tmp_path / "keep", steps=1)
    assert (tmp_path / "keep" / "notes.txt").exists()


def test_figures():
    from toolkit.viz.sof_figures import bic_figure, class_iou_figure, confusion_figure, miou_curve_figure

    curves = {"run": [{"step": 1, "miou": 0.2, "miou_fg": 0.1}, {"step": 5, "miou": 0.5, "miou_fg": 0.4}],
              "empty": []}
    res = segmentation_miou(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 20)
    selection = [{"components": 1, "covariance": "diag", "bic": -3.0, "skipped": None},
                 {"components": 2, "covariance": "diag", "bic": -5.0, "skipped": None},
                 {"components": 2, "covariance": "full", "bic": None, "skipped": "too few"}]
    figures = (miou_curve_figure(curves), confusion_figure(res.confusion),
               class_iou_figure({"a": res.per_class_iou}), bic_figure(selection))
    for fig in figures:
        assert fig.axes
        plt.close(fig)
    conf_fig = confusion_figure(res.confusion)
    assert len(conf_fig.axes[0].get_xticks()) == 3  # only classes that occur
    plt.close(conf_fig)
