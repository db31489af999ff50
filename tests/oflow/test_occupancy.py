"""Occupancy from dense surface points: analytic shapes, a synthetic body, and the real D-FAUST demo scan."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from toolkit.cli import main as cli_main
from toolkit.io import DataError
from toolkit.oflow.data import (
    PCL_DIR,
    POINTS_DIR,
    SequenceDataset,
    read_points_frame,
    read_sequence,
    validate_dataset,
    write_pcl_frame,
)
from toolkit.oflow.occupancy import SurfaceOccupancy, derive_scan_occupancy, occupancy_from_surface_points

N_SURFACE = 40_000


def _unit(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _sphere(rng, n=N_SURFACE, r=0.3, c=(0.0, 0.0, 0.0)):
    surface = _unit(rng, n) * r + np.asarray(c)
    return surface, lambda q: np.linalg.norm(q - np.asarray(c), axis=1) < r


def _torus(rng, n=N_SURFACE, R=0.3, r=0.1):
    # area-uniform: accept angle v with probability (R + r cos v) / (R + r)
    u, v = rng.uniform(0, 2 * np.pi, (2, 4 * n))
    keep = rng.random(4 * n) < (R + r * np.cos(v)) / (R + r)
    u, v = u[keep][:n], v[keep][:n]
    surface = np.stack([(R + r * np.cos(v)) * np.cos(u), (R + r * np.cos(v)) * np.sin(u), r * np.sin(v)], 1)
    return surface, lambda q: (np.hypot(q[:, 0], q[:, 1]) - R) ** 2 + q[:, 2] ** 2 < r * r


def _two_spheres(rng, gap):
    r = 0.2
    a, in_a = _sphere(rng, N_SURFACE // 2, r, (-(r + gap / 2), 0, 0))
    b, in_b = _sphere(rng, N_SURFACE // 2, r, (r + gap / 2, 0, 0))
    # the union's surface: drop the samples of each sphere that lie inside the other
    surface = np.concatenate([a[~in_b(a)], b[~in_a(b)]])
    return surface, lambda q: in_a(q) | in_b(q)


def _thin_box(rng, half=(0.3, 0.2, 0.015)):
    half = np.asarray(half)
    areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]])
    axis = rng.choice(3, size=N_SURFACE, p=areas / areas.sum())
    pts = rng.uniform(-1, 1, (N_SURFACE, 3)) * half
    pts[np.arange(N_SURFACE), axis] = np.where(rng.random(N_SURFACE) < 0.5, -1, 1) * half[axis]
    return pts, lambda q: (np.abs(q) < half).all(1)


SHAPES = {
    "sphere": (lambda rng: _sphere(rng), 1),
    "torus": (lambda rng: _torus(rng), 1),
    "two_spheres_touching": (lambda rng: _two_spheres(rng, 0.0), 1),
    "two_spheres_separate": (lambda rng: _two_spheres(rng, 0.05), 2),
    "thin_box": (lambda rng: _thin_box(rng), 1),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_occupancy_of_analytic_shapes(name):
    make, bodies = SHAPES[name]
    rng = np.random.default_rng(0)
    surface, exact = make(rng)
    lo, hi = surface.min(0) - 0.05, surface.max(0) + 0.05
    query = rng.uniform(lo, hi, (100_000, 3))
    occ = SurfaceOccupancy(surface)
    pred, truth = occ.contains(query), exact(query)
    iou = (pred & truth).sum() / (pred | truth).sum()
    print(f"{name}: IoU {iou:.5f}, bodies {occ.n_bodies}, dilation {occ.dilation}")
    assert iou >= 0.97
    assert occ.n_bodies == bodies
    assert not occ.contains(np.array([[5.0, 5.0, 5.0]]))[0]  # outside the grid is outside


def test_volume_of_a_sphere_and_the_function_form():
    rng = np.random.default_rng(1)
    surface, _ = _sphere(rng, r=0.25)
    occ = SurfaceOccupancy(surface)
    assert occ.volume() == pytest.approx(4 / 3 * np.pi * 0.25 ** 3, rel=0.01)
    query = rng.uniform(-0.3, 0.3, (2000, 3))
    np.testing.assert_array_equal(occupancy_from_surface_points(surface, query), occ.contains(query))
    assert occ.enclosed_fraction > 0.5  # a closed shell with a large enclosed inside


def test_occupancy_rejects_bad_input():
    with pytest.raises(ValueError, match=r"points must be \(P, 3\)"):
        SurfaceOccupancy(np.zeros((100, 2)))
    with pytest.raises(ValueError, match="need at least 16 surface points"):
        SurfaceOccupancy(np.zeros((5, 3)))
    surface, _ = _sphere(np.random.default_rng(0), n=2000)
    with pytest.raises(ValueError, match="NaN or inf"):
        SurfaceOccupancy(np.concatenate([surface, [[np.nan, 0, 0]]]))
    with pytest.raises(ValueError, match=r"query must be \(Q, 3\)"):
        SurfaceOccupancy(surface).contains(np.zeros(3))


def test_write_occupancy_from_scan_with_the_cli(tmp_path, capsys):
    """Two frames of a sphere scan moving and growing: points_seq is written, validates and loads."""
    rng = np.random.default_rng(2)
    seq = tmp_path / "scan" / "seq"
    unit = _unit(rng, 30_000)
    for i, (loc, scale) in enumerate([((0.0, 1.0, 0.0), 2.0), ((0.1, 1.0, 0.0), 2.2)]):
        write_pcl_frame(seq / PCL_DIR / f"{10 + i:08d}.npz", 0.5 * unit, loc, scale)
    assert cli_main(["occupancy", str(seq)]) == 0
    assert str(seq / POINTS_DIR) in capsys.readouterr().out
    assert validate_dataset(tmp_path / "scan") == []
    frame = read_points_frame(seq / POINTS_DIR / "00000011.npz")
    assert frame.points.shape == (100_000, 3) and np.abs(frame.points).max() <= 0.55
    assert float(frame.scale) == float(np.float16(2.2)) and frame.loc[0] == np.float16(0.1)
    exact = np.linalg.norm(frame.points.astype(np.float64), axis=1) < 0.5
    assert (frame.occupancies == exact).mean() > 0.995
    ds = SequenceDataset(tmp_path / "scan", length=2, cache_dir=tmp_path / "cache")
    assert ds[0]["points_t.occ"].shape == (512,)
    with pytest.raises(DataError, match="no pcl_seq/ folder"):
        derive_scan_occupancy(tmp_path / "scan")


def test_synthetic_body_surface_points(tmp_path):
    bodies = pytest.importorskip("toolkit.synthetic.bodies")
    body = bodies.Body(bodies.random_identity(np.random.default_rng(0)), "jumping_jacks", frames=17)
    frame = 5
    sample = body.surface_points(30_000, seed=0, frames=np.array([frame]))
    norm = body.normalization(frame)
    surface = (body.points_at(sample, frame) - norm.loc) / norm.scale
    query = np.random.default_rng(1).uniform(-0.55, 0.55, (100_000, 3))
    truth = np.asarray(body.occupancy_fn(frame, loc=norm.loc, scale=norm.scale)(query))
    occ = SurfaceOccupancy(surface)
    pred = occ.contains(query)
    iou = (pred & truth).sum() / (pred | truth).sum()
    print(f"synthetic body: IoU {iou:.5f}, bodies {occ.n_bodies}")
    assert iou >= 0.97 and occ.n_bodies == 1


@pytest.fixture(scope="module")
def demo_occupancy(shared_data, tmp_path_factory):
    src = shared_data / "dfaust_demo" / "50002_light_hopping_loose"
    if not (src / PCL_DIR).is_dir():
        pytest.skip(f"D-FAUST demo sequence not found at {src}")
    seq = tmp_path_factory.mktemp("demo") / src.name
    shutil.copytree(src / PCL_DIR, seq / PCL_DIR)  # a scratch copy: the shared data stays read-only
    return seq, derive_scan_occupancy(seq, progress=False)


def test_real_scan_gives_one_closed_body_of_constant_volume(demo_occupancy):
    seq, result = demo_occupancy
    scale = read_sequence(seq).pcl_scale
    frame0_units = result.volume * (scale / scale[0]) ** 3  # every frame in frame-0 normalised units
    box_estimate = result.inside_fraction * 1.1 ** 3 * (scale / scale[0]) ** 3
    np.set_printoptions(precision=5, linewidth=200)
    print("\nvolume (frame-0 units):", frame0_units, "\nbox fraction x box volume:", box_estimate,
          "\nworld m^3:", result.world_volume, "\nbodies:", result.n_bodies)
    assert len(result.frames) == 17 and (result.n_bodies == 1).all()
    assert np.abs(frame0_units / frame0_units.mean() - 1).max() < 0.02
    assert np.abs(box_estimate / box_estimate.mean() - 1).max() < 0.08  # 100k points: ~2% Poisson noise
    assert 0.02 < frame0_units.mean() < 0.035  # about 2.7% of the frame-0 unit cube


def test_real_scan_points_seq_validates_and_loads(demo_occupancy, tmp_path):
    seq, result = demo_occupancy
    assert validate_dataset(seq.parent) == []
    packed = read_sequence(seq)
    assert packed.points.shape == (17, 100_000, 3) and packed.occupancies.shape == (17, 12_500)
    np.testing.assert_array_equal(packed.points_loc, packed.pcl_loc)
    np.testing.assert_array_equal(packed.points_scale, packed.pcl_scale.astype(np.float16))
    np.testing.assert_allclose([packed.occupancy(f).mean() for f in range(17)], result.inside_fraction)
    item = SequenceDataset(seq.parent, cache_dir=tmp_path / "cache")[0]
    assert item["points"].shape == (512, 3) and 0 < float(item["points.occ"].mean()) < 0.2


def test_prepare_scan_sequence_reuses_and_never_replaces_a_finished_copy_unasked(tmp_path):
    from toolkit.oflow.train import prepare_scan_sequence

    rng = np.random.default_rng(3)
    src = tmp_path / "ref" / "seq"
    unit = _unit(rng, 5_000)
    for i in range(2):
        write_pcl_frame(src / PCL_DIR / f"{i:08d}.npz", 0.5 * unit, (0.05 * i, 0.0, 0.0), 2.0)
    work = tmp_path / "work"
    kw = {"resolution": 32, "progress": False}
    dst = prepare_scan_sequence(src, work, n_points=3_000, **kw)
    first = (dst / POINTS_DIR / "00000001.npz").stat().st_mtime_ns
    assert prepare_scan_sequence(src, work, n_points=3_000, **kw) == dst  # same settings: reused
    assert (dst / POINTS_DIR / "00000001.npz").stat().st_mtime_ns == first
    with pytest.raises(DataError, match=r"occupancy.json: a copy made with other settings \(\{'n_points': 3000\}\)"):
        prepare_scan_sequence(src, work, n_points=2_000, **kw)
    assert read_points_frame(dst / POINTS_DIR / "00000001.npz").points.shape == (3_000, 3)  # left as it was
    prepare_scan_sequence(src, work, n_points=2_000, overwrite=True, **kw)
    assert read_points_frame(dst / POINTS_DIR / "00000001.npz").points.shape == (2_000, 3)
    (dst / "occupancy.json").unlink()  # an interrupted copy (the record is written last) is rebuilt
    prepare_scan_sequence(src, work, n_points=3_000, **kw)
    assert read_points_frame(dst / POINTS_DIR / "00000001.npz").points.shape == (3_000, 3)
    shutil.rmtree(dst / POINTS_DIR)  # same settings but the labels gone: rebuilt, not refused
    prepare_scan_sequence(src, work, n_points=3_000, **kw)
    assert read_points_frame(dst / POINTS_DIR / "00000001.npz").points.shape == (3_000, 3)
