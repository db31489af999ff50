"""Motions of the procedural bodies: joint angles (degrees) as smooth periodic functions of a phase.

A motion maps ``(phase, amplitude)`` to a dict of named degrees of freedom (missing ones are 0) plus
root offsets in units of the body height. Every function is C1 in the phase (sines, cosines and
``max(0, .)**2`` ramps), so trajectories are smooth in time. Conventions (body faces +z, y up, +x is the
body's left): ``*_flex`` brings a limb forward (the knee's brings the shin backward), ``*_abd`` lifts it
sideways away from the body, ``spine_flex`` leans forward, ``spine_bend``/``root_roll`` tilt towards +x.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

DOFS = (
    "root_x", "root_y", "root_z", "root_roll", "root_pitch", "root_yaw",
    "spine_flex", "spine_bend", "spine_twist", "neck_flex", "head_flex", "head_turn",
    "shoulder_l_abd", "shoulder_l_flex", "shoulder_l_twist", "elbow_l", "wrist_l",
    "shoulder_r_abd", "shoulder_r_flex", "shoulder_r_twist", "elbow_r", "wrist_r",
    "hip_l_abd", "hip_l_flex", "hip_l_twist", "knee_l", "ankle_l",
    "hip_r_abd", "hip_r_flex", "hip_r_twist", "knee_r", "ankle_r",
)
"""Degrees of freedom; angles in degrees, root_x/y/z in units of the body height (root_y: jump height)."""

REST_POSE = {"shoulder_l_abd": 22.0, "shoulder_r_abd": 22.0, "elbow_l": 10.0, "elbow_r": 10.0,
             "hip_l_abd": 4.0, "hip_r_abd": 4.0}
"""The pose the surface samples are drawn in (arms away from the torso, so no surface is buried)."""


@dataclass(frozen=True)
class Motion:
    """A named periodic motion."""

    name: str
    angles: Callable[[float, float], dict[str, float]]
    """(phase in radians, amplitude factor) -> {dof: value}."""
    planted: bool = False
    """Keep the feet's mean horizontal position fixed (the hips move instead)."""
    description: str = ""


def _pos(x: float) -> float:
    return max(0.0, x) ** 2


def _up(phase: float) -> float:
    return 0.5 - 0.5 * math.cos(phase)


def _jumping_jacks(ph: float, a: float) -> dict[str, float]:
    s = _up(ph)
    arms = 16.0 + 140.0 * a * s
    legs = 3.0 + 17.0 * a * s
    return {"shoulder_l_abd": arms, "shoulder_r_abd": arms, "elbow_l": 15.0, "elbow_r": 15.0,
            "hip_l_abd": legs, "hip_r_abd": legs, "root_y": 0.035 * a * math.sin(ph) ** 2,
            "knee_l": 8.0 * math.sin(ph) ** 2, "knee_r": 8.0 * math.sin(ph) ** 2}


def _punching(ph: float, a: float) -> dict[str, float]:
    left, right = _up(ph), _up(ph + math.pi)
    out = {"spine_twist": 14.0 * a * math.sin(ph - math.pi / 2), "knee_l": 15.0, "knee_r": 15.0,
           "hip_l_flex": 12.0, "hip_r_flex": 12.0, "hip_l_abd": 8.0, "hip_r_abd": 8.0}
    for side, p in (("l", left), ("r", right)):
        out[f"shoulder_{side}_flex"] = 35.0 + 50.0 * a * p
        out[f"shoulder_{side}_abd"] = 22.0 - 8.0 * p
        out[f"elbow_{side}"] = 125.0 - 110.0 * a * p
        out[f"shoulder_{side}_twist"] = 20.0
    return out


def _knee_raises(ph: float, a: float) -> dict[str, float]:
    left, right = _pos(math.sin(ph)), _pos(-math.sin(ph))
    return {"hip_l_flex": 90.0 * a * left, "knee_l": 95.0 * a * left, "hip_r_flex": 90.0 * a * right,
            "knee_r": 95.0 * a * right, "ankle_l": 15.0 * left, "ankle_r": 15.0 * right,
            "shoulder_l_flex": 30.0 * a * (right - left), "shoulder_r_flex": 30.0 * a * (left - right),
            "shoulder_l_abd": 18.0, "shoulder_r_abd": 18.0, "elbow_l": 70.0, "elbow_r": 70.0,
            "spine_flex": 5.0 * (left + right)}


def _hip_shaking(ph: float, a: float) -> dict[str, float]:
    s = math.sin(ph)
    return {"root_roll": 7.0 * a * s, "root_x": 0.02 * a * s, "spine_bend": -9.0 * a * s,
            "knee_l": 12.0 + 10.0 * a * max(0.0, -s) ** 2, "knee_r": 12.0 + 10.0 * a * max(0.0, s) ** 2,
            "hip_l_flex": 8.0, "hip_r_flex": 8.0, "hip_l_abd": 5.0 - 7.0 * s * a, "hip_r_abd": 5.0 + 7.0 * s * a,
            "shoulder_l_abd": 35.0, "shoulder_r_abd": 35.0, "elbow_l": 70.0, "elbow_r": 70.0,
            "shoulder_l_flex": 15.0, "shoulder_r_flex": 15.0, "head_flex": -3.0 * s}


def _hopping(ph: float, a: float) -> dict[str, float]:
    air, land = _pos(math.sin(ph)), _pos(-math.sin(ph))
    return {"root_y": 0.05 * a * air, "knee_l": 8.0 + 40.0 * a * land, "knee_r": 8.0 + 40.0 * a * land,
            "hip_l_flex": 4.0 + 28.0 * a * land, "hip_r_flex": 4.0 + 28.0 * a * land,
            "ankle_l": -18.0 * air, "ankle_r": -18.0 * air, "hip_l_abd": 4.0, "hip_r_abd": 4.0,
            "shoulder_l_abd": 18.0 + 12.0 * air, "shoulder_r_abd": 18.0 + 12.0 * air,
            "shoulder_l_flex": 25.0 * a * (air - land), "shoulder_r_flex": 25.0 * a * (air - land),
            "elbow_l": 35.0, "elbow_r": 35.0, "spine_flex": 8.0 * land}


def _arm_waves(ph: float, a: float) -> dict[str, float]:
    return {"shoulder_l_abd": 85.0 + 25.0 * a * math.sin(ph), "shoulder_r_abd": 85.0 + 25.0 * a * math.sin(ph + 2.2),
            "elbow_l": 45.0 + 40.0 * a * math.sin(ph + 1.2), "elbow_r": 45.0 + 40.0 * a * math.sin(ph + 3.4),
            # twisting the upper arms by 90 degrees turns elbow flexion upwards when the arm is sideways
            "shoulder_l_twist": 90.0, "shoulder_r_twist": 90.0,
            "wrist_l": 25.0 * math.sin(ph + 2.0), "wrist_r": 25.0 * math.sin(ph + 4.2),
            "spine_bend": 6.0 * a * math.sin(ph + 1.1), "hip_l_abd": 5.0, "hip_r_abd": 5.0}


def _squats(ph: float, a: float) -> dict[str, float]:
    s = _up(ph)
    hip, knee = 95.0 * a * s, 110.0 * a * s
    return {"hip_l_flex": hip, "hip_r_flex": hip, "knee_l": knee, "knee_r": knee,
            "hip_l_abd": 6.0 + 6.0 * s, "hip_r_abd": 6.0 + 6.0 * s, "spine_flex": 28.0 * a * s,
            "shoulder_l_flex": 10.0 + 75.0 * s, "shoulder_r_flex": 10.0 + 75.0 * s,
            "shoulder_l_abd": 18.0 - 8.0 * s, "shoulder_r_abd": 18.0 - 8.0 * s, "elbow_l": 10.0, "elbow_r": 10.0,
            "neck_flex": -15.0 * s}


def _one_leg_jump(ph: float, a: float) -> dict[str, float]:
    air, land = _pos(math.sin(ph)), _pos(-math.sin(ph))
    return {"root_y": 0.04 * a * air, "knee_l": 10.0 + 35.0 * a * land, "hip_l_flex": 6.0 + 22.0 * a * land,
            "ankle_l": -15.0 * air, "hip_r_flex": 25.0, "knee_r": 85.0, "ankle_r": -20.0,
            "shoulder_l_abd": 35.0 + 20.0 * a * air, "shoulder_r_abd": 35.0 + 20.0 * a * air,
            "elbow_l": 25.0, "elbow_r": 25.0, "spine_bend": 4.0 * math.sin(ph), "hip_l_abd": 3.0}


MOTIONS: dict[str, Motion] = {m.name: m for m in (
    Motion("jumping_jacks", _jumping_jacks, description="arms up over the head and legs apart, with small jumps"),
    Motion("punching", _punching, description="alternating forward punches with a torso twist"),
    Motion("knee_raises", _knee_raises, description="alternating knees up to the hip, opposite arm swings"),
    Motion("hip_shaking", _hip_shaking, description="pelvis rolling side to side, spine bending against it"),
    Motion("hopping", _hopping, description="two-footed hops, crouching on landing"),
    Motion("arm_waves", _arm_waves, description="arms out sideways, waving with out-of-phase elbows"),
    Motion("squats", _squats, planted=True, description="deep squats with arms forward"),
    Motion("one_leg_jump", _one_leg_jump, description="hopping on the left leg, right shin lifted back"),
)}
"""The registry of motions, by name."""


def motion_angles(name: str, phase: float, amplitude: float) -> dict[str, float]:
    """Every DOF of motion ``name`` at ``phase`` (missing ones are 0)."""
    motion = get_motion(name)
    values = dict.fromkeys(DOFS, 0.0)
    for key, v in motion.angles(phase, amplitude).items():
        if key not in values:
            raise KeyError(f"motion {name!r} sets unknown degree of freedom {key!r}; valid: {DOFS}")
        values[key] = float(v)
    return values


def get_motion(name: str) -> Motion:
    if name not in MOTIONS:
        raise ValueError(f"unknown motion {name!r}; valid: {sorted(MOTIONS)}")
    return MOTIONS[name]
