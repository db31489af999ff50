"""Procedural moving bodies: exact occupancy, surface correspondences, meshes and the written dataset."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from toolkit.io import DataError
from toolkit.synthetic.bodies import (
    HELD_OUT_MOTION,
    MAX_PROJECTION,
    MOTIONS,
    PARTS,
    Body,
    Identity,
    dataset_plan,
    load_body,
    load_pcl_sample,
    random_identity,
    write_body_dataset,
)

SEED = 3


def _body(motion: str = "jumping_jacks", frames: int = 9, seed: int = SEED) -> Body:
    ident = random_identity(np.random.default_rng(seed), id=10000 + seed)
    return Body(ident, motion, frames=frames, period=12.0, phase=0.4, amplitude=1.0)


@pytest.fixture(scope="module")
def jacks():
    body = _body()
    sample = body.surface_points(1500, seed=0)
    positions = np.stack([body.points_at(sample, f) for f in range(body.frames)])
    return body, sample, positions


# ---------------------------------------------------------------------------------------------------------
# Correspondences
# ---------------------------------------------------------------------------------------------------------

def test_surface_points_stay_on_the_surface_in_every_frame(jacks):
    body, _, positions = jacks
    assert positions.shape == (body.frames, 1500, 3)
    for f in range(body.frames):
        sdf = body.sdf(positions[f], f)
        assert np.abs(sdf).max() < 1e-6, f"frame {f}: max |F| {np.abs(sdf).max():.2e}"


def test_rigid_points_stay_on_their_own_part_and_move_rigidly(jacks):
    body, sample, positions = jacks
    cols = np.arange(len(sample.part))
    alone = sample.blend_part < 0  # not skinned, and no other part within the blend width in any frame
    own = []
    for f in range(body.frames):
        D, _ = body._distances(positions[f], body.pose(f))
        own.append(D[sample.part, cols])
        D[sample.part, cols] = np.inf
        alone &= D.min(axis=0) >= body.blend
        # near other parts the smooth union moves a point off its own primitive, outwards and a little
        assert np.all(own[-1] >= -1e-7) and np.all(own[-1] <= MAX_PROJECTION * body.identity.height)
    assert alone.mean() > 0.4
    own = np.abs(np.stack(own)[:, alone])
    assert own.max() < 1e-12, f"points far from other parts left their own part by {own.max():.2e}"
    hand = np.flatnonzero(alone & (sample.part == PARTS.index("lower_arm_l")))[:40]
    assert hand.size >= 10
    pair = np.linalg.norm(positions[:, hand, None] - positions[:, None, hand], axis=-1)
    np.testing.assert_allclose(pair, np.broadcast_to(pair[0], pair.shape), atol=1e-9)  # rigid motion
    travel = np.linalg.norm(positions[-1, hand] - positions[0, hand], axis=1)
    assert travel.min() > 0.2, f"jumping-jack hands should travel; min travel {travel.min():.3f} m"


def test_blended_points_follow_their_joint_smoothly(jacks):
    body, sample, positions = jacks
    blended = np.flatnonzero(sample.blend_part >= 0)
    assert blended.size > 0
    assert ((sample.blend_weight[blended] > 0) & (sample.blend_weight[blended] <= 0.5)).all()
    # partners are kinematic neighbours (parent or child)
    parent = dict(enumerate((-1, 0, 0, 2, 3, 4, 3, 6, 7, 3, 9, 10, 0, 12, 13, 0, 15, 16)))
    own, other = sample.part[blended], sample.blend_part[blended]
    assert all(parent[o] == b or parent[b] == o for o, b in zip(own, other))
    # a fractional frame lies between its neighbours: no jumps in the trajectories
    mid = body.points_at(sample, 3.5)
    gap = np.linalg.norm(positions[4] - positions[3], axis=1)
    assert np.all(np.linalg.norm(mid - positions[3], axis=1) <= gap + 0.02)


def test_same_seed_same_sample_and_different_seed_different(jacks):
    body, sample, _ = jacks
    again = body.surface_points(1500, seed=0)
    for a, b in zip(sample, again):
        np.testing.assert_array_equal(a, b)
    other = body.surface_points(1500, seed=1)
    assert not np.allclose(other.local, sample.local)


# ---------------------------------------------------------------------------------------------------------
# Occupancy
# ---------------------------------------------------------------------------------------------------------

def test_occupancy_is_the_sign_of_the_sdf_and_callables_agree():
    torch = pytest.importorskip("torch")
    body = _body("knees")
    lo, hi = body.bbox(4)
    pts = np.random.default_rng(0).uniform(lo - 0.2, hi + 0.2, (20000, 3))
    sdf = body.sdf(pts, 4)
    occ = body.occupancy(pts, 4)
    np.testing.assert_array_equal(occ, sdf < 0)
    assert 0.02 < occ.mean() < 0.5
    np.testing.assert_array_equal(body.occupancy_fn(4)(pts), occ)
    # normalised coordinates: world = loc + scale * p, values in normalised units
    loc, scale = body.normalization(4)
    p = (pts - loc) / scale
    np.testing.assert_allclose(body.sdf_fn(4, loc=loc, scale=scale)(p), sdf / scale, atol=1e-9)
    out = body.occupancy_fn(4, loc=loc, scale=scale)(torch.from_numpy(p))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), occ)


def test_union_bounds_and_closed_form_points():
    body = _body("light_hopping_loose")
    pose = body.pose(2)
    pts = np.random.default_rng(1).uniform(*body.bbox(2), (5000, 3))
    D, _ = body._distances(pts, pose)  # every part, no culling
    F = body.sdf(pts, 2)
    # smooth union: never above the plain union, and equal to it where no two parts are within k
    assert np.all(F <= D.min(axis=0) + 1e-12)
    second = np.sort(D, axis=0)[1]
    alone = second - D.min(axis=0) >= body.blend
    assert alone.sum() > 1000
    np.testing.assert_allclose(F[alone], D.min(axis=0)[alone], atol=1e-12)
    # the centre of the torso is inside, a point 1 m beside the body is outside
    torso = PARTS.index("torso")
    centre = pose.rotations[torso] @ np.asarray(body._prims[torso].c) + pose.translations[torso]
    assert body.occupancy(centre[None], 2)[0]
    assert not body.occupancy((centre + [1.5, 0.0, 0.0])[None], 2)[0]


@pytest.mark.parametrize("motion,frame", [("knees", 3), ("light_hopping_loose", 2)])
def test_bbox_is_the_surface_bbox(motion, frame):
    body = _body(motion)
    lo, hi = body.bbox(frame)
    surface = body.points_at(body.surface_points(40000, seed=2, frames=[frame]), frame)
    # every surface point inside, and every face touched (within 2 mm) by the dense surface sample:
    # the smooth blend can reach k/4 beyond the parts (under the ankles), the box must include that
    assert np.all(surface.min(axis=0) >= lo - 1e-9) and np.all(surface.max(axis=0) <= hi + 1e-9)
    assert np.all(surface.min(axis=0) - lo < 0.002) and np.all(hi - surface.max(axis=0) < 0.002)
    pts = np.random.default_rng(3).uniform(lo - 0.05, hi + 0.05, (100_000, 3))
    outside = ((pts < lo) | (pts > hi)).any(axis=1)
    assert not body.occupancy(pts[outside], frame).any()
    loc, scale = body.normalization(frame)
    assert abs(scale - (hi - lo).max()) < 2e-3 * scale and np.allclose(loc, 0.5 * (lo + hi), atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# Motions and identities
# ---------------------------------------------------------------------------------------------------------

DFAUST_MOTIONS = {"chicken_wings", "hips", "jiggle_on_toes", "jumping_jacks", "knees", "light_hopping_loose",
                  "light_hopping_stiff", "one_leg_jump", "one_leg_loose", "punching", "running_on_spot",
                  "shake_arms", "shake_hips", "shake_shoulders"}


def test_motions_are_dfausts_and_the_held_out_one_is_among_them():
    assert set(MOTIONS) == DFAUST_MOTIONS
    assert HELD_OUT_MOTION in MOTIONS and HELD_OUT_MOTION != "light_hopping_loose"  # the real demo's motion
    assert all(10.0 <= m.period <= 60.0 for m in MOTIONS.values())  # frames at 60 fps: 1-6 Hz


def test_motions_are_smooth_and_distinct():
    ident = Identity()
    trajectories = {}
    for name in MOTIONS:
        body = Body(ident, name, frames=9, period=16.0)
        traj = np.stack([body.pose(f).translations for f in np.linspace(0, 8, 33)])  # (T, P, 3)
        step = np.linalg.norm(np.diff(traj, axis=0), axis=-1).max()
        assert np.ptp(traj, axis=0).max() > 0.05, f"{name} barely moves"
        assert step < 0.08, f"{name} jumps {step:.3f} m between quarter frames"
        trajectories[name] = traj
    names = list(trajectories)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = np.abs(trajectories[a] - trajectories[b]).max()
            assert diff > 0.05, f"{a} and {b} are the same motion (max difference {diff:.3f} m)"


def test_identities_differ_by_seed_and_bodies_are_deterministic():
    a = random_identity(np.random.default_rng(0))
    b = random_identity(np.random.default_rng(1))
    assert a != b
    assert a == random_identity(np.random.default_rng(0))
    pts = np.random.default_rng(5).uniform(-0.5, 1.5, (3000, 3))
    s1 = Body(a, "punching", frames=5).sdf(pts, 2)
    s2 = Body(a, "punching", frames=5).sdf(pts, 2)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, Body(b, "punching", frames=5).sdf(pts, 2))


def test_unknown_motion_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown motion 'moonwalk'; valid: .*jumping_jacks"):
        Body(Identity(), "moonwalk")


# ---------------------------------------------------------------------------------------------------------
# Meshes
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("motion,frame", [("jumping_jacks", 5), ("one_leg_jump", 6)])
def test_mesh_is_watertight_with_the_sdf_volume(motion, frame):
    trimesh = pytest.importorskip("trimesh")
    body = _body(motion)
    mesh = body.mesh(frame, resolution=96)
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # outward normals
    lo, hi = body.bbox(frame)
    voxel = (hi - lo).max() / 96
    # vertices in world units on the surface (PyMCubes index units mapped correctly)
    assert np.abs(body.sdf(mesh.vertices.astype(np.float64), frame)).max() < voxel
    np.testing.assert_allclose(mesh.vertices.min(axis=0), lo, atol=voxel)
    np.testing.assert_allclose(mesh.vertices.max(axis=0), hi, atol=voxel)
    # Monte Carlo volume of the exact field
    n = 300_000
    pts = np.random.default_rng(0).uniform(lo, hi, (n, 3))
    frac = body.occupancy(pts, frame).mean()
    volume = frac * np.prod(hi - lo)
    rel_err = abs(tm.volume - volume) / volume
    assert rel_err < 0.03, f"mesh volume {tm.volume:.5f} vs Monte Carlo {volume:.5f} m^3 ({rel_err:.1%})"


# ---------------------------------------------------------------------------------------------------------
# The written dataset
# ---------------------------------------------------------------------------------------------------------

_SMALL = {"sequences": 6, "frames": 3, "seed": 1, "n_points": 3000, "n_pcl": 800, "mesh_resolution": 40,
          "progress": False}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_body_dataset(tmp_path_factory.mktemp("bodies") / "ds", **_SMALL)


def test_dataset_validates_and_has_the_documented_splits(dataset):
    data = pytest.importorskip("toolkit.oflow.data")
    assert data.validate_dataset(dataset) == []
    root = dataset / "synthetic"
    splits = {s: (root / f"{s}.lst").read_text().split()
              for s in ("train", "val", "test", "test_new_individual", "test_new_motion")}
    everything = [n for names in splits.values() for n in names]
    assert len(everything) == len(set(everything)) == _SMALL["sequences"]
    assert sorted(everything) == sorted(d.name for d in root.iterdir() if d.is_dir())
    assert all(len(v) >= 1 for v in splits.values())
    ident = lambda name: name.split("_", 1)[0]
    motion = lambda name: name.split("_", 1)[1]
    train_ids, train_motions = {ident(n) for n in splits["train"]}, {motion(n) for n in splits["train"]}
    held_out_ids = {ident(n) for n in splits["test_new_individual"]}
    others = ("train", "val", "test", "test_new_motion")
    assert not held_out_ids & {ident(n) for s in others for n in splits[s]}
    assert {motion(n) for n in splits["test_new_motion"]} == {HELD_OUT_MOTION}
    assert HELD_OUT_MOTION not in {motion(n) for s in ("train", "val", "test", "test_new_individual")
                                   for n in splits[s]}
    for n in splits["test"] + splits["val"]:  # seen identity and seen motion, unseen pair
        assert ident(n) in train_ids and motion(n) in train_motions and n not in splits["train"]
    meta = json.loads((root / "bodies.json").read_text())
    assert meta["held_out_motion"] == HELD_OUT_MOTION
    assert sorted(str(i) for i in meta["held_out_identities"]) == sorted(held_out_ids)
    _, plan = dataset_plan(_SMALL["sequences"], _SMALL["seed"])
    assert {p.name: p.split for p in plan} == {n: s for s, names in splits.items() for n in names}


def test_points_seq_occupancy_is_exact_after_the_round_trip(dataset):
    data = pytest.importorskip("toolkit.oflow.data")
    seq = next(p for p in sorted((dataset / "synthetic").iterdir()) if p.is_dir())
    body = load_body(seq)
    for f in range(_SMALL["frames"]):
        frame = data.read_points_frame(seq / "points_seq" / f"{f:08d}.npz")
        assert frame.points.shape == (_SMALL["n_points"], 3)
        assert np.abs(frame.points.astype(np.float64)).max() <= 0.55
        world = frame.loc.astype(np.float64) + float(frame.scale) * frame.points.astype(np.float64)
        sdf = body.sdf(world, f)
        differ = (sdf < 0) != frame.occupancies
        # float16 storage: only points within ~1e-3 (normalised) of the surface may flip
        assert np.all(np.abs(sdf[differ]) < 1e-3 * float(frame.scale))
        assert 0.005 < frame.occupancies.mean() < 0.2


def test_pcl_seq_holds_exact_correspondences(dataset):
    data = pytest.importorskip("toolkit.oflow.data")
    seq = next(p for p in sorted((dataset / "synthetic").iterdir()) if p.is_dir())
    body, sample = load_pcl_sample(seq)
    for f in range(_SMALL["frames"]):
        pcl = data.read_pcl_frame(seq / "pcl_seq" / f"{f:08d}.npz")
        pts = pcl.points.astype(np.float64)
        assert np.abs(pts).max() <= 0.5 + 1e-3  # normalised by this frame's bbox
        world = pcl.loc.astype(np.float64) + float(pcl.scale) * pts
        exact = body.points_at(sample, f)
        # index k is the exact point k of the sample, up to float16 rounding of the normalised value
        assert np.abs(world - exact).max() < 1e-3 * float(pcl.scale)
        # the mesh of the same frame (world units) hugs the same surface
        mesh = (seq / "mesh_seq" / f"{f:08d}.ply")
        assert mesh.is_file()


def test_load_body_round_trip_and_errors(dataset, tmp_path):
    seq = next(p for p in sorted((dataset / "synthetic").iterdir()) if p.is_dir())
    body = load_body(seq)
    info = json.loads((seq / "body.json").read_text())
    assert body.name == info["name"] == seq.name and body.frames == _SMALL["frames"]
    with pytest.raises(DataError, match="body.json: file not found"):
        load_body(tmp_path)
    (tmp_path / "body.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object"):
        load_body(tmp_path)
    # a description written by the first generator (no version) would rebuild a different body
    old = {k: v for k, v in info.items() if k != "body_model"}
    (tmp_path / "body.json").write_text(json.dumps(old))
    with pytest.raises(DataError, match="body generator version 1, this is version 2"):
        load_body(tmp_path)


def test_dataset_is_deterministic_by_seed(dataset, tmp_path):
    small = dict(_SMALL, sequences=3, frames=2, n_points=1000, n_pcl=300, mesh_resolution=24)
    a = write_body_dataset(tmp_path / "a", **small)
    b = write_body_dataset(tmp_path / "b", **small)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # another seed: other identities and motion parameters
    ids_a, plan_a = dataset_plan(3, small["seed"])
    ids_c, _ = dataset_plan(3, small["seed"] + 1)
    assert ids_a != ids_c
    meta = json.loads((a / "synthetic" / "bodies.json").read_text())
    assert meta["seed"] == small["seed"] and sorted(meta["sequences"]) == sorted(p.name for p in plan_a)


def test_near_surface_points_carry_the_exact_inside_labels(tmp_path):
    from toolkit.oflow.data import NEAR_DIR, read_pcl_frame, read_points_frame
    from toolkit.synthetic.bodies import load_body, write_body_dataset

    root = write_body_dataset(tmp_path / "b", sequences=1, frames=3, n_points=200, n_pcl=2000, n_near=3000,
                              mesh_resolution=24, progress=False)
    seq = next(p.parent for p in root.glob("*/*/body.json"))
    body = load_body(seq)
    near = read_points_frame(seq / NEAR_DIR / "00000002.npz")
    world = near.loc.astype(np.float64) + float(near.scale) * near.points.astype(np.float64)
    np.testing.assert_array_equal(near.occupancies, body.occupancy(world, 2))
    # around the surface at two scales: a good share inside, most points close to the surface
    assert 0.3 < near.occupancies.mean() < 0.7
    surface = read_pcl_frame(seq / "pcl_seq" / "00000002.npz").points.astype(np.float64)
    from scipy.spatial import cKDTree

    dist = cKDTree(surface).query(near.points.astype(np.float64))[0]
    assert np.median(dist) < 0.04 and np.mean(dist < 0.1) > 0.95
