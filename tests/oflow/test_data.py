"""Occupancy Flow data: file format round trips, normalisation, validation, packing, windows, the Dataset."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.cli import main as cli_main
from toolkit.io import DataError
from toolkit.oflow.data import (
    PCL_DIR,
    POINTS_DIR,
    SequenceDataset,
    cache_folder,
    find_sequences,
    normalize_to_frame0,
    pack_sequence,
    read_pcl_frame,
    read_points_frame,
    read_sequence,
    sequence_frames,
    subsequence_starts,
    validate_dataset,
    write_pcl_frame,
    write_points_frame,
    write_split,
)

N_OCC = 100  # not a multiple of 8: exercises the packbits padding
N_PCL = 400


def _write_sequence(seq: Path, *, frames: int = 5, first: int = 0, seed: int = 0, n_occ: int = N_OCC,
                    n_pcl: int = N_PCL) -> dict:
    """A small sequence with known content: per-frame loc/scale, pcl = rest + small motion."""
    rng = np.random.default_rng(seed)
    rest = rng.uniform(-0.45, 0.45, (n_pcl, 3))
    truth = {"loc": [], "scale": [], "pcl": [], "points": [], "occ": []}
    for i in range(frames):
        loc = np.array([0.1 * i, 1.0, -0.05 * i])
        scale = 1.8 + 0.02 * i
        pcl = rest + 0.01 * i * np.array([1.0, 0.5, 0.0])
        pts = rng.uniform(-0.55, 0.55, (n_occ, 3))
        occ = np.linalg.norm(pts, axis=1) < 0.4
        name = f"{first + i:08d}.npz"
        write_pcl_frame(seq / PCL_DIR / name, pcl, loc, scale)
        write_points_frame(seq / POINTS_DIR / name, pts, occ, loc, scale)
        for k, v in zip(truth, (loc, scale, pcl, pts, occ)):
            truth[k].append(v)
    return truth


@pytest.fixture
def dataset(tmp_path) -> Path:
    """<root>/humans/{seq_a (5 frames), seq_b (6 frames)} plus a split list."""
    root = tmp_path / "data"
    _write_sequence(root / "humans" / "seq_a", frames=5, seed=1)
    _write_sequence(root / "humans" / "seq_b", frames=6, first=30, seed=2)
    write_split(root / "humans", "train", ["seq_b", "seq_a"])
    return root


# -------------------------------------------------------------------------------------------------------
# Format round trips and normalisation
# -------------------------------------------------------------------------------------------------------

def test_points_frame_round_trip_exact_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.55, 0.55, (N_OCC, 3))
    occ = rng.random(N_OCC) < 0.3
    path = write_points_frame(tmp_path / "00000000.npz", pts, occ, [0.5, -1.0, 2.0], 1.75)
    with np.load(path) as raw:
        assert sorted(raw.files) == ["loc", "occupancies", "points", "scale"]
        assert (raw["points"].dtype, raw["points"].shape) == (np.float16, (N_OCC, 3))
        assert (raw["occupancies"].dtype, raw["occupancies"].shape) == (np.uint8, ((N_OCC + 7) // 8,))
        assert (raw["loc"].dtype, raw["loc"].shape) == (np.float16, (3,))
        assert (raw["scale"].dtype, raw["scale"].shape) == (np.float16, ())
        np.testing.assert_array_equal(raw["points"], pts.astype(np.float16))
        np.testing.assert_array_equal(np.unpackbits(raw["occupancies"])[:N_OCC].astype(bool), occ)
        assert raw["scale"] == np.float16(1.75)
    frame = read_points_frame(path)
    np.testing.assert_array_equal(frame.points, pts.astype(np.float16))
    np.testing.assert_array_equal(frame.occupancies, occ)
    np.testing.assert_array_equal(frame.loc, np.array([0.5, -1.0, 2.0], dtype=np.float16))
    assert frame.occupancies.dtype == bool and frame.scale.dtype == np.float16


def test_pcl_frame_round_trip_exact_dtypes(tmp_path):
    pts = np.random.default_rng(1).uniform(-0.5, 0.5, (N_PCL, 3))
    path = write_pcl_frame(tmp_path / "00000007.npz", pts, [0.0229, 0.2983, -0.077], 1.800786)
    with np.load(path) as raw:
        assert sorted(raw.files) == ["loc", "points", "scale"]
        assert raw["points"].dtype == np.float16 and raw["loc"].dtype == np.float16
        assert raw["scale"].dtype == np.float64 and raw["scale"].shape == ()
        assert float(raw["scale"]) == 1.800786  # float64 keeps the scale exactly
    frame = read_pcl_frame(path)
    np.testing.assert_array_equal(frame.points, pts.astype(np.float16))
    with pytest.raises(ValueError, match=r"points must be \(P, 3\)"):
        write_pcl_frame(tmp_path / "bad.npz", pts[:, :2], [0, 0, 0], 1.0)
    with pytest.raises(ValueError, match=r"occupancies must be \(100,\)"):
        write_points_frame(tmp_path / "bad.npz", pts[:N_OCC], np.zeros(99, bool), [0, 0, 0], 1.0)


def test_split_lists_and_discovery(dataset):
    lst = dataset / "humans" / "train.lst"
    assert lst.read_text() == "seq_b\nseq_a\n"
    assert [s.name for s in find_sequences(dataset, "train")] == ["seq_b", "seq_a"]  # list order
    assert [(s.category, s.name) for s in find_sequences(dataset)] == [("humans", "seq_a"), ("humans", "seq_b")]
    assert [s.name for s in find_sequences(dataset / "humans")] == ["seq_a", "seq_b"]
    assert [s.name for s in find_sequences(dataset / "humans" / "seq_a")] == ["seq_a"]
    assert [s.name for s in find_sequences(dataset, ["humans/seq_a"])] == ["seq_a"]
    with pytest.raises(DataError, match=r"split list val\.lst not found"):
        find_sequences(dataset, "val")
    with pytest.raises(DataError, match="'ghost' not found"):
        find_sequences(dataset, ["ghost"])
    assert sequence_frames(dataset / "humans" / "seq_b")[0] == "00000030.npz"


def test_frames_are_read_in_sorted_order(tmp_path):
    seq = tmp_path / "seq"
    for i in (2, 0, 1):  # written out of order; the original's unsorted glob would follow the directory
        write_pcl_frame(seq / PCL_DIR / f"{i:08d}.npz", np.full((8, 3), 0.1 * i), [0, 0, 0], 1.0)
    packed = read_sequence(seq)
    assert packed.frames == ("00000000.npz", "00000001.npz", "00000002.npz")
    np.testing.assert_array_equal(packed.pcl[:, 0, 0], np.float16([0.0, 0.1, 0.2]))


def test_normalize_to_frame0_hand_computed():
    # world = (1, 2, 3) + 2 * (0.5, 0, -0.25) = (2, 2, 2.5); frame 0: ((2, 2, 2.5) - (0, 2, 4)) / 4
    p = np.array([[0.5, 0.0, -0.25]])
    out = normalize_to_frame0(p, np.array([1.0, 2.0, 3.0]), 2.0, np.array([0.0, 2.0, 4.0]), 4.0)
    np.testing.assert_allclose(out, [[0.5, 0.0, -0.375]], rtol=0, atol=1e-7)
    assert out.dtype == np.float64
    # frame 0 maps onto itself
    q = np.random.default_rng(0).uniform(-0.5, 0.5, (50, 3)).astype(np.float16)
    np.testing.assert_allclose(normalize_to_frame0(q, [0.3, 1, 2], 1.8, [0.3, 1, 2], 1.8), q, rtol=0, atol=1e-7)


# -------------------------------------------------------------------------------------------------------
# Validation
# -------------------------------------------------------------------------------------------------------

def _seq(root: Path) -> Path:
    return root / "humans" / "seq_a"


def _rewrite(path: Path, **changes) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)


def _missing_key(root):
    f = _seq(root) / PCL_DIR / "00000002.npz"
    _rewrite(f, loc=None)
    return f, r"missing keys \['loc'\]"


def _wrong_dtype(root):
    f = _seq(root) / POINTS_DIR / "00000001.npz"
    _rewrite(f, points=np.zeros((N_OCC, 3), np.float32))
    return f, "points has dtype float32; expected float16"


def _wrong_shape(root):
    f = _seq(root) / PCL_DIR / "00000000.npz"
    _rewrite(f, loc=np.zeros(4, np.float16))
    return f, r"loc has shape \(4,\); expected \(3,\)"


def _nan_points(root):
    f = _seq(root) / PCL_DIR / "00000003.npz"
    with np.load(f) as z:
        pts = z["points"].copy()
    pts[5, 1] = np.nan
    pts[7, 0] = np.inf
    _rewrite(f, points=pts)
    return f, "points has 2 non-finite"


def _occupancy_bits(root):
    f = _seq(root) / POINTS_DIR / "00000004.npz"
    _rewrite(f, occupancies=np.packbits(np.ones(2 * N_OCC, bool)))
    return f, r"occupancies has shape \(25,\) \(200 bits\) for 100 points; expected \(13,\)"


def _frame_count_mismatch(root):
    (_seq(root) / POINTS_DIR / "00000004.npz").unlink()
    return _seq(root), r"frame count mismatch: points_seq has 4 frames, pcl_seq has 5; only in pcl_seq"


def _gap_in_frames(root):
    for field in (POINTS_DIR, PCL_DIR):
        os.replace(_seq(root) / field / "00000004.npz", _seq(root) / field / "00000009.npz")
    return _seq(root) / PCL_DIR, r"not consecutive: missing \[4, 5, 6, 7, 8\]"


def _unparsable_name(root):
    f = _seq(root) / PCL_DIR / "frame_5.npz"
    shutil.copy(_seq(root) / PCL_DIR / "00000000.npz", f)
    return f, r"unparsable frame name: expected %08d\.npz"


def _corrupt_npz(root):
    f = _seq(root) / POINTS_DIR / "00000002.npz"
    f.write_bytes(f.read_bytes()[:300])
    return f, "corrupt or unreadable npz"


def _pcl_count_differs(root):
    f = _seq(root) / PCL_DIR / "00000003.npz"
    write_pcl_frame(f, np.zeros((N_PCL - 1, 3)), [0.3, 1.0, -0.15], 1.86)
    return f, f"{N_PCL - 1} points, but most frames have {N_PCL}; correspondences need the same count"


def _split_names_missing(root):
    write_split(root / "humans", "val", ["seq_a", "ghost"])
    return root / "humans" / "val.lst", r"line 2: sequence 'ghost' not found"


def _empty_sequence_folder(root):
    (root / "humans" / "seq_c").mkdir()
    return root / "humans" / "seq_c", "empty sequence folder"


def _empty_field_folder(root):
    shutil.rmtree(_seq(root) / POINTS_DIR)
    (_seq(root) / POINTS_DIR).mkdir()
    return _seq(root) / POINTS_DIR, r"no frames \(%08d\.npz files\)"


def _loc_differs_between_fields(root):
    f = _seq(root) / POINTS_DIR / "00000001.npz"
    _rewrite(f, loc=np.array([5.0, 5.0, 5.0], np.float16))
    return f, "loc/scale .* differ from pcl_seq/00000001.npz"


BROKEN = [_missing_key, _wrong_dtype, _wrong_shape, _nan_points, _occupancy_bits, _frame_count_mismatch,
          _gap_in_frames, _unparsable_name, _corrupt_npz, _pcl_count_differs, _split_names_missing,
          _empty_sequence_folder, _empty_field_folder, _loc_differs_between_fields]


@pytest.mark.parametrize("breaker", BROKEN, ids=[f.__name__.strip("_") for f in BROKEN])
def test_validator_reports_file_and_problem(dataset, breaker):
    path, pattern = breaker(dataset)
    problems = validate_dataset(dataset)
    hits = [p for p in problems if p.path == str(path) and re.search(pattern, p.message)]
    assert hits, f"expected {path}: /{pattern}/; got {problems}"
    # the same problem is found when validating only the category
    assert any(p.path == str(path) for p in validate_dataset(dataset / "humans"))


def test_validator_accepts_a_good_dataset_at_every_level(dataset):
    seq = _seq(dataset)
    for path in (dataset, dataset / "humans", seq, seq / PCL_DIR, seq / POINTS_DIR / "00000000.npz"):
        assert validate_dataset(path) == [], path
    pack_sequence(seq)  # a cache folder inside the sequence is not part of the dataset
    assert (seq / ".packed").is_dir() and validate_dataset(dataset) == []
    assert validate_dataset(dataset / "nowhere")[0].message == "no such file or folder"


def test_cli_validate_exit_codes(dataset, capsys):
    assert cli_main(["validate", str(dataset)]) == 0
    assert "OK (oflow format)" in capsys.readouterr().out
    path, _ = _corrupt_npz(dataset)
    assert cli_main(["validate", str(dataset)]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and str(path) in out and "corrupt" in out


def test_readers_raise_data_error_naming_the_file(dataset):
    path, _ = _wrong_dtype(dataset)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*points has dtype float32"):
        read_points_frame(path)
    with pytest.raises(DataError, match="points has dtype float32"):
        read_sequence(_seq(dataset))


# -------------------------------------------------------------------------------------------------------
# Packed cache
# -------------------------------------------------------------------------------------------------------

def test_pack_sequence_matches_direct_reads_and_rebuilds_on_change(dataset, tmp_path):
    seq = dataset / "humans" / "seq_b"
    cache_root = tmp_path / "cache"
    packed = pack_sequence(seq, cache_dir=cache_root)
    direct = read_sequence(seq)
    assert isinstance(packed.pcl, np.memmap) and packed.frames == direct.frames
    for key in ("points", "occupancies", "points_loc", "points_scale", "pcl", "pcl_loc", "pcl_scale"):
        a, b = getattr(packed, key), getattr(direct, key)
        assert a.dtype == b.dtype and a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=key)
    assert packed.pcl.shape == (6, N_PCL, 3) and packed.occupancies.shape == (6, 13)
    frame = read_points_frame(seq / POINTS_DIR / "00000032.npz")
    np.testing.assert_array_equal(packed.occupancy(2), frame.occupancies)
    idx = np.array([0, 7, 8, 99, 50, 50])
    np.testing.assert_array_equal(packed.occupancy(2, idx), frame.occupancies[idx])

    manifest = cache_folder(seq, cache_root) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    pack_sequence(seq, cache_dir=cache_root)
    assert manifest.stat().st_mtime_ns == stamp  # reused, not rebuilt

    write_pcl_frame(seq / PCL_DIR / "00000033.npz", np.full((N_PCL, 3), 0.25), [0.3, 1, -0.15], 1.86)
    repacked = pack_sequence(seq, cache_dir=cache_root)
    assert manifest.stat().st_mtime_ns != stamp
    np.testing.assert_array_equal(repacked.pcl[3], np.full((N_PCL, 3), 0.25, np.float16))
    np.testing.assert_array_equal(repacked.pcl[2], direct.pcl[2])


def test_pack_sequence_refuses_unequal_point_counts(dataset, tmp_path):
    _pcl_count_differs(dataset)
    with pytest.raises(DataError, match="every frame needs the same count"):
        pack_sequence(_seq(dataset), cache_dir=tmp_path / "cache")


# -------------------------------------------------------------------------------------------------------
# Windows and the Dataset
# -------------------------------------------------------------------------------------------------------

def test_subsequence_starts_original_semantics():
    assert subsequence_starts(20, length=17) == [0, 1, 2, 3]
    assert subsequence_starts(20, length=17, offset=2) == [2, 3]
    assert subsequence_starts(20, length=17, stride=2) == [0, 2]
    assert subsequence_starts(17, length=17) == [0]
    assert subsequence_starts(16, length=17) == []
    with pytest.raises(ValueError, match="length >= 1"):
        subsequence_starts(20, length=0)


def test_dataset_window_count(tmp_path):
    root = tmp_path / "d"
    _write_sequence(root / "a", frames=20, n_pcl=40, n_occ=16)
    _write_sequence(root / "b", frames=18, n_pcl=40, n_occ=16, seed=3)
    kw = {"n_input_points": 8, "n_points": 4, "n_points_t": 4, "n_corr_points": 4, "cache_dir": tmp_path / "c"}
    assert len(SequenceDataset(root, length=17, **kw)) == 4 + 2
    assert len(SequenceDataset(root, length=17, offset=2, **kw)) == 2 + 0
    windows = SequenceDataset(root, length=17, offset=1, **kw).windows
    assert windows == [(0, 1), (0, 2), (0, 3), (1, 1)]
    with pytest.raises(DataError, match="no window of 21 frames"):
        SequenceDataset(root, length=21, **kw)


def _frame0(truth, key, i, start=0):
    """Frame i of ``key`` in frame ``start``'s coordinates, from the values as stored (float16 rounding)."""
    loc = [np.float16(v).astype(np.float64) for v in truth["loc"]]
    scale = [float(np.float16(s)) if key == "points" else s for s in truth["scale"]]
    return normalize_to_frame0(np.asarray(truth[key][i], np.float16), loc[i], scale[i], loc[start], scale[start])


def _match_rows(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    """Index in ``b`` of each row of ``a`` (asserting a match within tol)."""
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    idx = d.argmin(1)
    assert d[np.arange(len(a)), idx].max() < tol
    return idx


def test_dataset_training_sample_rules(tmp_path):
    L, start = 5, 1
    root = tmp_path / "d"
    truth = _write_sequence(root / "s", frames=6, n_pcl=N_PCL, n_occ=N_OCC, seed=5)
    ds = SequenceDataset(root, length=L, n_input_points=200, input_noise=0.001, n_points=64, n_points_t=32,
                         n_corr_points=50, seed=3, cache_dir=tmp_path / "c")
    assert len(ds) == 2
    item = ds[start]
    shapes = {k: tuple(v.shape) for k, v in item.items() if isinstance(v, torch.Tensor)}
    assert shapes == {"inputs": (L, 200, 3), "points": (64, 3), "points.occ": (64,), "points_t": (32, 3),
                      "points_t.occ": (32,), "points_t.time": (), "pointcloud": (L, 50, 3), "times": (L,),
                      "start": ()}
    assert item["sequence"] == "s" and int(item["start"]) == start
    torch.testing.assert_close(item["times"], torch.arange(L, dtype=torch.float32) / (L - 1))

    # inputs: the same pcl indices in every frame (frame-0 coordinates of the window), plus noise ~ 0.001
    frames = [_frame0(truth, "pcl", start + i, start) for i in range(L)]
    inputs = item["inputs"].numpy()
    idx = _match_rows(inputs[0], frames[0], tol=0.01)
    assert len(np.unique(idx)) == 200
    residual = np.stack([inputs[i] - frames[i][idx] for i in range(L)])
    assert abs(residual.std() - 0.001) < 0.0001 and abs(residual.mean()) < 0.0001

    # correspondence trajectories: same indices, no noise
    pc = item["pointcloud"].numpy()
    cidx = _match_rows(pc[0], frames[0], tol=1e-5)
    for i in range(L):
        np.testing.assert_allclose(pc[i], frames[i][cidx], rtol=0, atol=1e-6)

    # occupancy points at t=0 come from the window's first frame with their labels
    p0 = item["points"].numpy()
    j = _match_rows(p0, _frame0(truth, "points", start, start), tol=1e-6)
    np.testing.assert_array_equal(item["points.occ"].numpy(), truth["occ"][start][j])
    # points_t: the frame given by its time, with that frame's labels
    ft = round(float(item["points_t.time"]) * (L - 1))
    jt = _match_rows(item["points_t"].numpy(), _frame0(truth, "points", start + ft, start), tol=1e-6)
    np.testing.assert_array_equal(item["points_t.occ"].numpy(), truth["occ"][start + ft][jt])

    # reproducible per (seed, epoch, index)
    again = SequenceDataset(root, length=L, n_input_points=200, n_points=64, n_points_t=32, n_corr_points=50,
                            seed=3, cache_dir=tmp_path / "c")[start]
    torch.testing.assert_close(again["inputs"], item["inputs"])
    ds.set_epoch(1)
    assert not torch.equal(ds[start]["inputs"], item["inputs"])
    ds.set_epoch(0)
    torch.testing.assert_close(ds[start]["points_t"], item["points_t"])


def test_dataset_times_of_random_frames_cover_the_window(tmp_path):
    root = tmp_path / "d"
    _write_sequence(root / "s", frames=5, n_pcl=40, n_occ=16)
    ds = SequenceDataset(root, length=5, n_input_points=4, n_points=2, n_points_t=2, n_corr_points=2,
                         cache_dir=tmp_path / "c")
    times = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        times.add(float(ds[0]["points_t.time"]))
    assert times == {0.0, 0.25, 0.5, 0.75, 1.0}


def test_dataset_eval_items(tmp_path):
    L = 4
    root = tmp_path / "d"
    truth = _write_sequence(root / "s", frames=4, seed=7)
    ds = SequenceDataset(root, length=L, eval=True, n_eval_points=60, n_input_points=10,
                         cache_dir=tmp_path / "c")
    item = ds[0]
    assert item["points"].shape == (L, 60, 3) and item["points.occ"].shape == (L, 60)
    assert item["pointcloud"].shape == (L, N_PCL, 3) and "points_t" not in item
    for i in range(L):
        expected = _frame0(truth, "points", i)[:60]
        np.testing.assert_allclose(item["points"][i].numpy(), expected, rtol=0, atol=1e-3)  # 1e-4 jitter
        assert np.abs(item["points"][i].numpy() - expected).max() > 0  # the jitter is there
        np.testing.assert_array_equal(item["points.occ"][i].numpy(), truth["occ"][i][:60])
        np.testing.assert_allclose(item["pointcloud"][i].numpy(), _frame0(truth, "pcl", i), rtol=0, atol=1e-6)
    ds.set_epoch(5)  # evaluation ignores the epoch
    torch.testing.assert_close(ds[0]["inputs"], item["inputs"])


def test_dataset_without_occupancy_and_missing_points_seq(tmp_path):
    root = tmp_path / "d"
    _write_sequence(root / "s", frames=3, n_pcl=40)
    shutil.rmtree(root / "s" / POINTS_DIR)
    with pytest.raises(DataError, match="no points_seq/: derive it with `python -m toolkit occupancy"):
        SequenceDataset(root, length=3, cache_dir=tmp_path / "c")
    item = SequenceDataset(root, length=3, occupancy=False, n_input_points=8, n_corr_points=4,
                           cache_dir=tmp_path / "c")[0]
    assert set(item) == {"inputs", "pointcloud", "times", "sequence", "start"}


def test_dataset_batches_with_a_dataloader(tmp_path):
    root = tmp_path / "d"
    _write_sequence(root / "s", frames=6, n_pcl=40, n_occ=16)
    ds = SequenceDataset(root, length=3, n_input_points=8, n_points=5, n_points_t=5, n_corr_points=4,
                         cache_dir=tmp_path / "c")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["inputs"].shape == (4, 3, 8, 3) and batch["points_t.time"].shape == (4,)
    assert batch["sequence"] == ["s"] * 4
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # what spawn workers receive: no memory maps inside
    torch.testing.assert_close(clone[2]["inputs"], ds[2]["inputs"])


# -------------------------------------------------------------------------------------------------------
# Real data: the D-FAUST demo sequence
# -------------------------------------------------------------------------------------------------------

def test_real_dfaust_demo(shared_data, tmp_path):
    root = shared_data / "dfaust_demo"
    if not root.is_dir():
        pytest.skip(f"D-FAUST demo not found at {root}")
    seqs = find_sequences(root)
    assert [s.name for s in seqs] == ["50002_light_hopping_loose"]
    seq = seqs[0].path
    assert validate_dataset(root) == []
    before = sorted((p.relative_to(seq), p.stat().st_mtime_ns) for p in seq.rglob("*"))
    packed = pack_sequence(seq, cache_dir=tmp_path / "cache")
    # the reference data is never written (a copy of it may arrive with a cache already inside)
    assert sorted((p.relative_to(seq), p.stat().st_mtime_ns) for p in seq.rglob("*")) == before
    assert packed.n_frames == 17 and packed.frames[0] == "00000080.npz" and packed.points is None
    assert packed.pcl.dtype == np.float16 and packed.pcl.shape == (17, 100_000, 3)
    assert packed.pcl_scale.dtype == np.float64 and packed.pcl_loc.dtype == np.float16

    # each frame is normalised on its own: bounding-box centre 0, largest side 1 (float16 rounding)
    for f in (0, 8, 16):
        pts = packed.pcl[f].astype(np.float64)
        assert abs((pts.max(0) - pts.min(0)).max() - 1.0) < 2e-3
        np.testing.assert_allclose(0.5 * (pts.max(0) + pts.min(0)), 0.0, atol=2e-3)

    # into frame 0: the world positions agree, and same-index displacement is small
    f0 = [normalize_to_frame0(packed.pcl[i], packed.pcl_loc[i], packed.pcl_scale[i], packed.pcl_loc[0],
                              packed.pcl_scale[0]) for i in range(17)]
    world_i = packed.pcl_loc[5].astype(np.float64) + packed.pcl_scale[5] * packed.pcl[5].astype(np.float64)
    world_0 = packed.pcl_loc[0].astype(np.float64) + packed.pcl_scale[0] * f0[5].astype(np.float64)
    np.testing.assert_allclose(world_0, world_i, rtol=0, atol=1e-5)
    step = np.linalg.norm(f0[1] - f0[0], axis=1)
    shuffled = np.linalg.norm(f0[1] - f0[0][np.random.default_rng(0).permutation(100_000)], axis=1)
    assert 0.003 < step.mean() < 0.01 and step.max() < 0.03  # documented: mean 0.0062, max 0.017
    assert shuffled.mean() > 0.3  # documented: random pairing about 0.36
    per_step = [np.linalg.norm(f0[i + 1] - f0[i], axis=1).mean() for i in range(16)]
    assert max(per_step) < 0.01

    # the Dataset's noise-free trajectories are exactly these frame-0 coordinates
    ds = SequenceDataset(root, occupancy=False, input_noise=0.0, cache_dir=tmp_path / "cache")
    item = ds[0]
    assert len(ds) == 1 and item["inputs"].shape == (17, 300, 3)
    idx = _match_rows(item["inputs"][0].numpy()[:20], f0[0], tol=1e-6)
    for i in (1, 16):
        np.testing.assert_allclose(item["inputs"][i].numpy()[:20], f0[i][idx], rtol=0, atol=1e-5)
