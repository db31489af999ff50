"""The procedural bodies look and move like D-FAUST (facts in ../shared/reference/real-data.md).

Proportions, builds (inside volume, share of the evaluation box), rest posture, hands and feet, and motion
speeds in frame-0 normalised units, the units the Occupancy Flow model sees. The last test measures the
real demo sequence the same way and skips when ../shared/data is absent.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.synthetic.bodies import (
    BOX_HALF,
    HELD_OUT_MOTION,
    MOTIONS,
    PARTS,
    Body,
    Identity,
    dataset_plan,
    random_identity,
)

WINDOW = 17  # frames of an Occupancy Flow window


def _standing(ident: Identity) -> Body:
    """The rest pose: stiff light hopping with no amplitude, at the bottom of its cycle, is standing still."""
    return Body(ident, "light_hopping_stiff", frames=1, phase=-0.5 * math.pi, amplitude=0.0)


def _box_fill(body: Body, frame: float = 0.0, n: int = 100_000) -> float:
    """Share of the frame's normalised [-0.55, 0.55]^3 box inside the body (as points_seq samples it)."""
    norm = body.normalization(frame)
    pts = np.random.default_rng(0).uniform(-BOX_HALF, BOX_HALF, (n, 3))
    return float(body.occupancy(norm.loc + norm.scale * pts, frame).mean())


def _window(body: Body, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(T, n, 3) surface points in frame-0 normalised units, and the sample's world positions."""
    frames = np.arange(body.frames)
    sample = body.surface_points(n, seed, frames=frames)
    world = np.stack([body.points_at(sample, f) for f in frames])
    norm = body.normalization(0)
    return (world - norm.loc) / norm.scale, world


@pytest.fixture(scope="module")
def identities() -> list[Identity]:
    # the identities a dataset with seed 0 draws
    return [random_identity(np.random.default_rng([0, 0, i]), id=10000 + i) for i in range(16)]


@pytest.fixture(scope="module")
def builds(identities) -> list[tuple[float, float, np.ndarray]]:
    """(inside volume m^3, box fill, frame-0 normalised extent) of each identity standing."""
    out = []
    for ident in identities:
        body = _standing(ident)
        fill = _box_fill(body)
        norm = body.normalization(0)
        lo, hi = body.bbox(0)
        out.append((fill * (2 * BOX_HALF * norm.scale) ** 3, fill, (hi - lo) / norm.scale))
    return out


# ---------------------------------------------------------------------------------------------------------
# Motions
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("motion", sorted(MOTIONS))
def test_every_motion_keeps_its_points_on_the_surface_and_moves_like_a_capture(motion):
    k = sorted(MOTIONS).index(motion)
    ident = random_identity(np.random.default_rng([5, k]), id=10000 + k)
    body = Body(ident, motion, frames=WINDOW, phase=0.7 * k)
    assert body.period == MOTIONS[motion].period  # the motion's typical period at 60 fps
    points, world = _window(body)
    for f in range(body.frames):
        sdf = body.sdf(world[f], f)
        assert np.abs(sdf).max() < 1e-6, f"{motion} frame {f}: max |F| {np.abs(sdf).max():.2e}"
    # real D-FAUST (light hopping): about 0.005 per frame; shakes of one body part move less, jumps more
    step = np.linalg.norm(np.diff(points, axis=0), axis=-1).mean()
    assert 0.0012 < step < 0.015, f"{motion}: mean displacement {step:.4f} per frame"
    travel = np.linalg.norm(points - points[0], axis=-1).max(axis=0)
    assert travel.max() > 0.04, f"{motion}: nothing travels more than {travel.max():.3f} in a window"
    # feet stay on the ground (or leave it by a hop's height at most)
    lo, _ = body.bbox(0)
    assert -1e-6 < lo[1] < 0.1 * ident.height


def test_supporting_feet_stay_planted():
    # light shaking motions and knee raises: the foot that carries the body does not slide
    foot = {"l": PARTS.index("foot_l"), "r": PARTS.index("foot_r")}
    for motion, sides in (("shake_arms", "lr"), ("punching", "lr"), ("one_leg_loose", "l"), ("hips", "lr")):
        body = Body(Identity(), motion, frames=WINDOW)
        sample = body.surface_points(600, 1, frames=np.arange(WINDOW))
        world = np.stack([body.points_at(sample, f) for f in range(WINDOW)])
        for side in sides:
            pts = world[:, sample.part == foot[side]]
            slide = np.linalg.norm((pts - pts[0])[..., [0, 2]], axis=-1).max()
            assert slide < 0.02 * Identity().height, f"{motion}: {side} foot slides {slide:.3f} m"


# ---------------------------------------------------------------------------------------------------------
# Identities
# ---------------------------------------------------------------------------------------------------------

def test_identities_span_thin_to_heavy(identities, builds):
    heights = np.array([i.height for i in identities])
    volumes = np.array([v for v, _, _ in builds])
    assert heights.min() >= 1.5 and heights.max() <= 1.95 and np.ptp(heights) > 0.2
    # real D-FAUST subjects: 0.090 m^3 (1.56 m) to 0.158 m^3 (1.80 m)
    assert volumes.min() < 0.08 and volumes.max() > 0.14, volumes.round(3)
    assert np.all((volumes > 0.045) & (volumes < 0.23)), volumes.round(3)
    per_cube = volumes / heights ** 3  # build, independent of height
    assert per_cube.min() < 0.016 and per_cube.max() > 0.023, per_cube.round(4)


def test_standing_fill_and_extent_match_real_scans(builds):
    fills = np.array([f for _, f, _ in builds])
    extents = np.stack([e for _, _, e in builds])
    # real: 1.8-2.1 % of the box (heavy demo), 1.76 % for a slim subject; thin bodies fill less
    assert np.all((fills > 0.009) & (fills < 0.024)), fills.round(4)
    assert 0.013 < fills.mean() < 0.021, fills.mean()
    # real demo 0.62 x 1.0 x 0.26: arms away from the torso, thin in z (feet and belly set the depth)
    np.testing.assert_allclose(extents[:, 1], 1.0, atol=1e-3)
    assert np.all((extents[:, 0] > 0.45) & (extents[:, 0] < 0.75)), extents[:, 0].round(3)
    assert np.all((extents[:, 2] > 0.15) & (extents[:, 2] < 0.3)), extents[:, 2].round(3)
    heavy = int(np.argmax([v for v, _, _ in builds]))
    assert extents[heavy, 0] > 0.53 and fills[heavy] > 0.017


def test_hands_and_feet_are_visible_and_proportioned():
    ident = Identity(height=1.75)
    body = _standing(ident)
    sample = body.surface_points(6000, 0, frames=[0.0])
    x = body.points_at(sample, 0.0)
    pose = body.pose(0.0)
    for side in "lr":
        foot = x[sample.part == PARTS.index(f"foot_{side}")]
        ankle = pose.translations[PARTS.index(f"foot_{side}")]
        length = np.ptp(foot[:, 2])
        assert 0.22 < length < 0.29, f"foot length {length:.3f} m"
        # pointing forward (+z): most of the foot is in front of the ankle, the heel a little behind
        assert foot[:, 2].max() - ankle[2] > 2.0 * (ankle[2] - foot[:, 2].min()) > 0.0
        assert foot[:, 1].min() < 0.01  # on the ground
        # the hand in its own frame (x across the palm's thickness, y wrist to fingertips, z its width)
        hand = sample.local[sample.part == PARTS.index(f"hand_{side}")]
        assert len(hand) > 30
        thick, length, width = np.ptp(hand, axis=0)
        assert 0.14 < length < 0.22 and 0.06 < width < 0.1 and 0.02 < thick < 0.05, (thick, length, width)


def test_arms_hang_clear_of_the_trunk(identities, builds):
    heavy = identities[int(np.argmax([v for v, _, _ in builds]))]
    for ident in (Identity(), heavy):
        body = _standing(ident)
        sample = body.surface_points(4000, 0, frames=[0.0])
        forearms = ("lower_arm_l", "hand_l", "lower_arm_r", "hand_r")
        arms = np.isin(sample.part, [PARTS.index(n) for n in forearms])
        D, _ = body._distances(body.points_at(sample, 0.0)[arms], body.pose(0.0))
        trunk = D[[PARTS.index(n) for n in ("pelvis", "belly", "torso")]].min(axis=0)
        assert trunk.min() > 0.0, f"{ident.id}: forearm or hand touches the trunk"


# ---------------------------------------------------------------------------------------------------------
# Dataset plan
# ---------------------------------------------------------------------------------------------------------

def test_dataset_plan_covers_every_motion():
    _, plan = dataset_plan(40, seed=0)
    assert {p.motion for p in plan} == set(MOTIONS)
    assert {p.motion for p in plan if p.split == "test_new_motion"} == {HELD_OUT_MOTION}
    assert {p.motion for p in plan if p.split == "train"} == set(MOTIONS) - {HELD_OUT_MOTION}
    assert all(p.name == f"{10000 + p.identity}_{p.motion}" for p in plan)  # D-FAUST-like names


# ---------------------------------------------------------------------------------------------------------
# Against the real demo (../shared/data)
# ---------------------------------------------------------------------------------------------------------

def test_light_hopping_resembles_the_real_demo(shared_data, identities):
    from toolkit.oflow.data import read_pcl_frame

    files = sorted((shared_data / "dfaust_demo" / "50002_light_hopping_loose" / "pcl_seq").glob("*.npz"))
    if len(files) < WINDOW:
        pytest.skip("the real demo sequence is incomplete")
    frames = [read_pcl_frame(f) for f in files[:WINDOW]]
    loc0, scale0 = frames[0].loc.astype(np.float64), float(frames[0].scale)
    real = np.stack([(f.loc.astype(np.float64) + float(f.scale) * f.points.astype(np.float64) - loc0) / scale0
                     for f in frames])
    real_step = np.linalg.norm(np.diff(real, axis=0), axis=-1).mean()
    real_extent = np.ptp(real[0], axis=0)
    steps = []
    for k, ident in enumerate(identities[:4]):
        body = Body(ident, "light_hopping_loose", frames=WINDOW, phase=1.5 * k)
        points, _ = _window(body, n=400)
        steps.append(np.linalg.norm(np.diff(points, axis=0), axis=-1).mean())
        lo, hi = body.bbox(0)
        extent = (hi - lo) / body.normalization(0).scale
        close = np.abs(extent - real_extent) < [0.2, 0.05, 0.12]
        assert close.all(), (extent.round(3), real_extent.round(3))
    # same speed within a factor of two (neither frozen nor frantic)
    assert 0.5 < np.mean(steps) / real_step < 2.0, (np.round(steps, 4), round(real_step, 4))
