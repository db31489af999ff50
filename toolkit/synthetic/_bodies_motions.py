"""Motions of the procedural bodies: D-FAUST's 14 motions as smooth periodic joint-angle functions.

D-FAUST (Bogo et al. 2017) recorded ten subjects performing 14 named motions at 60 fps, each from a
standing rest pose with the arms hanging a little away from the body. ``MOTIONS`` has one motion per
D-FAUST name, so synthetic sequence names read like D-FAUST's ``<id>_<motion>``. A motion maps
``(phase, amplitude)`` to a dict of named degrees of freedom (see ``DOFS``; missing ones are 0); the
phase runs once around 2 pi per ``Motion.period`` frames. Periods and amplitudes are those of people
doing the exercise (a two-footed light hop takes about half a second, a shake about a quarter), so the
per-frame displacements are those of real 60 fps captures.

Every function is C1 in the phase (sines, cosines and ``max(0, .)**2`` ramps), so trajectories are
smooth in time. Conventions (body faces +z, y up, +x is the body's left): ``*_flex`` brings a limb
forward (the knee's brings the shin backward), ``*_abd`` lifts it sideways away from the body,
``*_twist`` of the hip turns the toes out, of the shoulder turns the forearm outwards; a positive elbow
angle bends the forearm forward, a negative ankle angle points the toes down; ``spine_flex`` leans
forward, ``spine_bend`` / ``root_roll`` tilt towards +x, ``chest_twist`` turns the chest (and the arms)
towards +x. ``support`` says which foot carries the body (+1 left, -1 right, 0 both): that foot keeps its
place on the ground while the other one moves.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

DOFS = (
    "root_x", "root_y", "root_z", "root_roll", "root_pitch", "root_yaw", "support",
    "spine_flex", "spine_bend", "spine_twist", "chest_twist", "chest_roll",
    "neck_flex", "head_flex", "head_turn",
    "shoulder_l_abd", "shoulder_l_flex", "shoulder_l_twist", "elbow_l", "wrist_l",
    "shoulder_r_abd", "shoulder_r_flex", "shoulder_r_twist", "elbow_r", "wrist_r",
    "hip_l_abd", "hip_l_flex", "hip_l_twist", "knee_l", "ankle_l",
    "hip_r_abd", "hip_r_flex", "hip_r_twist", "knee_r", "ankle_r",
)
"""Degrees of freedom; angles in degrees, root_x/y/z in units of the body height (root_y: jump height),
``support`` in [-1, 1]."""

STAND = {"shoulder_l_abd": 22.0, "shoulder_r_abd": 22.0, "shoulder_l_flex": 4.0, "shoulder_r_flex": 4.0,
         "elbow_l": 14.0, "elbow_r": 14.0, "hip_l_abd": 4.0, "hip_r_abd": 4.0, "hip_l_twist": 6.0,
         "hip_r_twist": 6.0, "knee_l": 2.0, "knee_r": 2.0}
"""D-FAUST's rest posture: arms hanging a little away from the torso (the body adds the clearance its
girth needs, see ``bodies.Body``), elbows slightly bent, feet a little apart and turned out."""

REST_POSE = {**STAND, "shoulder_l_abd": 28.0, "shoulder_r_abd": 28.0, "hip_l_abd": 5.0, "hip_r_abd": 5.0}
"""The pose the surface samples are drawn in (the standing posture with the arms and legs a little wider
apart, so that no surface is buried)."""


@dataclass(frozen=True)
class Motion:
    """A named periodic motion."""

    name: str
    angles: Callable[[float, float], dict[str, float]]
    """(phase in radians, amplitude factor) -> {dof: value}."""
    period: float = 30.0
    """Typical period in frames at 60 fps (``write_body_dataset`` varies it per sequence)."""
    planted: bool = True
    """Keep the supporting foot (see ``support``) in place horizontally: the hips move instead."""
    description: str = ""


def _pos(x: float) -> float:
    return max(0.0, x) ** 2


def _up(phase: float) -> float:
    return 0.5 - 0.5 * math.cos(phase)


def _sides(values: dict[str, float], **both: float) -> dict[str, float]:
    """``values`` plus each ``name=v`` of ``both`` set on the left and right (``shoulder_abd`` -> l and r)."""
    out = dict(values)
    for key, v in both.items():
        joint, _, dof = key.partition("_")
        out[f"{joint}_l_{dof}" if dof else f"{joint}_l"] = v
        out[f"{joint}_r_{dof}" if dof else f"{joint}_r"] = v
    return out


def _stand(**changes: float) -> dict[str, float]:
    return {**STAND, **changes}


def _legs_lean(out: dict[str, float], lateral: float, forward: float) -> dict[str, float]:
    """Lean both legs so that, with the feet planted, the hips move ``lateral`` degrees towards +x and
    ``forward`` degrees forward (hip circles and shakes: the pelvis moves over fixed feet)."""
    out["hip_l_abd"] = out.get("hip_l_abd", 0.0) - lateral
    out["hip_r_abd"] = out.get("hip_r_abd", 0.0) + lateral
    out["hip_l_flex"] = out.get("hip_l_flex", 0.0) - forward
    out["hip_r_flex"] = out.get("hip_r_flex", 0.0) - forward
    return out


def _tilt_pelvis(out: dict[str, float], roll: float, pitch: float) -> dict[str, float]:
    """Roll (towards +x) and pitch (forward) the pelvis by the given degrees while the hip joints turn
    the legs back, so the legs keep their direction (the whole body would tip over the feet otherwise)."""
    out["root_roll"] = out.get("root_roll", 0.0) + roll
    out["root_pitch"] = out.get("root_pitch", 0.0) + pitch
    out["hip_l_abd"] = out.get("hip_l_abd", 0.0) + roll
    out["hip_r_abd"] = out.get("hip_r_abd", 0.0) - roll
    out["hip_l_flex"] = out.get("hip_l_flex", 0.0) + pitch
    out["hip_r_flex"] = out.get("hip_r_flex", 0.0) + pitch
    return out


def _give(out: dict[str, float], side: str, bend: float) -> dict[str, float]:
    """Bend the knee of leg ``side`` by ``bend`` degrees the way a standing person relaxes a leg: the knee
    goes forward (half the bend at the hip) and the heel comes up (the foot stays where it is)."""
    out[f"knee_{side}"] = out.get(f"knee_{side}", 0.0) + bend
    out[f"hip_{side}_flex"] = out.get(f"hip_{side}_flex", 0.0) + 0.5 * bend
    out[f"ankle_{side}"] = out.get(f"ankle_{side}", 0.0) - 0.5 * bend
    return out


def _alternate(ph: float) -> float:
    """A smooth sign of sin(ph), in (-1, 1): which foot carries the body in alternating motions."""
    s = math.sin(ph)
    return s / math.sqrt(s * s + 0.04)


def _chicken_wings(ph: float, a: float) -> dict[str, float]:
    flap = _up(ph)
    # elbows bent sharply with the hands at the chest (upper arms turned in), flapping out sideways; the
    # knees give a little on every down stroke
    out = _stand(spine_flex=2.0 * (1.0 - flap))
    return _sides(out, shoulder_abd=8.0 + 52.0 * a * flap, shoulder_flex=12.0 + 6.0 * flap,
                  shoulder_twist=-55.0, elbow=125.0 - 10.0 * flap, wrist=10.0 * math.sin(ph - 1.0),
                  knee=3.0 + 8.0 * a * (1.0 - flap), hip_flex=2.0 + 4.0 * a * (1.0 - flap))


def _hips(ph: float, a: float) -> dict[str, float]:
    s, c = math.sin(ph), math.cos(ph)
    # the pelvis circles over the planted feet and the chest stays above them; the weight goes to the leg
    # the hips move over, the other knee gives
    out = _stand(support=_alternate(ph), spine_bend=-9.0 * a * s, spine_flex=6.0 * a * c, knee_l=8.0,
                 knee_r=8.0, hip_l_flex=4.0, hip_r_flex=4.0)
    out = _sides(out, shoulder_abd=22.0, elbow=22.0, shoulder_flex=6.0)
    out = _give(_give(out, "l", 8.0 * a * _pos(-s)), "r", 8.0 * a * _pos(s))
    return _legs_lean(_tilt_pelvis(out, 6.0 * a * s, -5.0 * a * c), 3.5 * a * s, 3.0 * a * c)


def _jiggle_on_toes(ph: float, a: float) -> dict[str, float]:
    rise = _up(ph)
    # heels up with the knees straight, down with the knees bent: bouncing on the balls of the feet
    out = _stand(spine_flex=3.0 * (1.0 - rise))
    return _sides(out, ankle=-(6.0 + 18.0 * a * rise), knee=3.0 + 14.0 * a * (1.0 - rise),
                  hip_flex=1.0 + 6.0 * a * (1.0 - rise), shoulder_abd=20.0 + 4.0 * a * math.sin(ph - 1.5),
                  elbow=16.0 + 10.0 * a * _up(ph - 1.8))


def _jumping_jacks(ph: float, a: float) -> dict[str, float]:
    s = _up(ph)
    hop = math.sin(ph) ** 2  # a small jump at every change between closed and open
    out = _stand(root_y=0.035 * a * hop)
    return _sides(out, shoulder_abd=14.0 + 140.0 * a * s, elbow=14.0 + 6.0 * s, hip_abd=3.0 + 16.0 * a * s,
                  knee=2.0 + 10.0 * hop, hip_flex=3.0 * hop, ankle=-12.0 * hop)


def _knees(ph: float, a: float) -> dict[str, float]:
    left, right = _pos(math.sin(ph)), _pos(-math.sin(ph))
    # the right foot carries the body while the left knee is up, and the other way round
    out = _stand(support=-_alternate(ph), spine_flex=4.0 * (left + right))
    out.update(hip_l_flex=75.0 * a * left, knee_l=2.0 + 88.0 * a * left, ankle_l=12.0 * left,
               hip_r_flex=75.0 * a * right, knee_r=2.0 + 88.0 * a * right, ankle_r=12.0 * right)
    # arms swing against the legs
    out.update(shoulder_l_flex=4.0 + 25.0 * a * (right - left),
               shoulder_r_flex=4.0 + 25.0 * a * (left - right),
               elbow_l=35.0, elbow_r=35.0, shoulder_l_abd=18.0, shoulder_r_abd=18.0)
    return out


def _hop(ph: float, a: float, *, height: float, crouch: float) -> tuple[float, float, float, float]:
    """Jump height, knee bend, ankle angle and ground-contact weight (0..1) of a two-footed hop.

    The body flies while sin(ph) > 0 (toes pointing down) and is on the ground otherwise, where it sinks
    into the landing (knees bend, heels come down) and pushes off again.
    """
    air, land = _pos(math.sin(ph)), _pos(-math.sin(ph))
    return height * a * air, crouch * a * land, -14.0 * air - 8.0 * (1.0 - land), land


def _light_hopping_loose(ph: float, a: float) -> dict[str, float]:
    jump, bend, ankle, land = _hop(ph, a, height=0.03, crouch=34.0)
    out = _stand(root_y=jump, spine_flex=6.0 * land)
    # loose arms lag behind the body and flop
    return _sides(out, knee=4.0 + bend, hip_flex=2.0 + 0.7 * bend, ankle=ankle,
                  shoulder_abd=22.0 + 7.0 * a * math.sin(ph - 1.3), elbow=18.0 + 16.0 * a * _up(ph - 2.0),
                  shoulder_flex=4.0 + 8.0 * a * math.sin(ph - 1.6), wrist=12.0 * math.sin(ph - 2.2))


def _light_hopping_stiff(ph: float, a: float) -> dict[str, float]:
    jump, bend, ankle, _ = _hop(ph, a, height=0.028, crouch=12.0)
    # body and arms held straight: the hop comes from the ankles
    out = _stand(root_y=jump)
    return _sides(out, knee=2.0 + bend, hip_flex=1.0 + 0.5 * bend, ankle=1.2 * ankle, shoulder_abd=21.0,
                  elbow=6.0, shoulder_flex=2.0)


def _one_leg_jump(ph: float, a: float) -> dict[str, float]:
    air, land = _pos(math.sin(ph)), _pos(-math.sin(ph))
    out = _stand(support=1.0, root_y=0.03 * a * air, spine_bend=3.0 * math.sin(ph), spine_flex=4.0 * land)
    out.update(knee_l=4.0 + 30.0 * a * land, hip_l_flex=2.0 + 18.0 * a * land, ankle_l=-18.0 * air,
               hip_r_flex=22.0, knee_r=75.0 + 8.0 * math.sin(ph - 1.0), ankle_r=-15.0, hip_r_abd=4.0)
    return _sides(out, shoulder_abd=24.0 + 10.0 * a * air, elbow=22.0 + 10.0 * land)


def _one_leg_loose(ph: float, a: float) -> dict[str, float]:
    s = math.sin(ph)
    out = _stand(support=1.0, spine_bend=2.0 * s, knee_l=6.0)
    # the right leg, lifted a little, is shaken loosely: the shin and foot lag behind the thigh
    out.update(hip_r_flex=22.0 + 12.0 * a * s, knee_r=42.0 + 26.0 * a * math.sin(ph - 1.1),
               ankle_r=-10.0 + 18.0 * a * math.sin(ph - 2.0), hip_r_abd=5.0 + 4.0 * a * math.sin(ph + 1.0))
    return _sides(out, shoulder_abd=26.0, elbow=20.0)


def _punching(ph: float, a: float) -> dict[str, float]:
    left, right = _up(ph), _up(ph + math.pi)
    bounce = 4.0 * a * _up(2.0 * ph)  # the knees give with every punch
    out = _stand(spine_twist=-12.0 * a * math.cos(ph), knee_l=10.0 + bounce, knee_r=10.0 + bounce,
                 hip_l_flex=6.0 + 0.5 * bounce, hip_r_flex=6.0 + 0.5 * bounce, hip_l_abd=6.0, hip_r_abd=6.0)
    # from the guard (fists at the chin) straight forward and back
    for side, p in (("l", left), ("r", right)):
        out[f"shoulder_{side}_flex"] = 40.0 + 48.0 * a * p
        out[f"shoulder_{side}_abd"] = 14.0 - 6.0 * p
        out[f"shoulder_{side}_twist"] = -25.0 * (1.0 - p)
        out[f"elbow_{side}"] = 125.0 - 115.0 * a * p
    return out


def _running_on_spot(ph: float, a: float) -> dict[str, float]:
    left, right = _pos(math.sin(ph)), _pos(-math.sin(ph))
    flight = math.sin(ph) ** 2  # a small bounce at every step
    out = _stand(support=-_alternate(ph), root_y=0.012 * a * flight, spine_flex=5.0)
    out.update(hip_l_flex=40.0 * a * left, knee_l=5.0 + 95.0 * a * left, ankle_l=-20.0 * left,
               hip_r_flex=40.0 * a * right, knee_r=5.0 + 95.0 * a * right, ankle_r=-20.0 * right)
    swing = 32.0 * a * math.sin(ph)
    out.update(shoulder_l_flex=10.0 - swing, shoulder_r_flex=10.0 + swing, elbow_l=85.0, elbow_r=85.0,
               shoulder_l_abd=16.0, shoulder_r_abd=16.0)
    return out


def _shake_arms(ph: float, a: float) -> dict[str, float]:
    bounce = 4.0 * a * _up(2.0 * ph)
    out = _stand(knee_l=3.0 + bounce, knee_r=3.0 + bounce, hip_l_flex=0.5 * bounce, hip_r_flex=0.5 * bounce,
                 chest_twist=4.0 * a * math.sin(ph - 0.5))
    # both arms shaken loosely and out of step: the forearm and hand lag behind the upper arm
    for side, off in (("l", 0.0), ("r", math.pi)):
        out[f"shoulder_{side}_flex"] = 18.0 + 14.0 * a * math.sin(ph + off)
        out[f"shoulder_{side}_abd"] = 22.0 + 9.0 * a * math.sin(ph + off + 1.0)
        out[f"elbow_{side}"] = 28.0 + 22.0 * a * math.sin(ph + off - 1.0)
        out[f"wrist_{side}"] = 28.0 * a * math.sin(ph + off - 2.0)
    return out


def _shake_hips(ph: float, a: float) -> dict[str, float]:
    s = math.sin(ph)
    out = _stand(support=_alternate(ph), spine_bend=-9.0 * a * s, knee_l=10.0, knee_r=10.0, hip_l_flex=6.0,
                 hip_r_flex=6.0, head_flex=-2.0 * s)
    out = _sides(out, shoulder_abd=24.0 + 3.0 * s, elbow=35.0, shoulder_flex=8.0)
    out = _give(_give(out, "l", 12.0 * a * _pos(-s)), "r", 12.0 * a * _pos(s))
    return _legs_lean(_tilt_pelvis(out, 7.0 * a * s, 0.0), 2.5 * a * s, 0.0)


def _shake_shoulders(ph: float, a: float) -> dict[str, float]:
    s = math.sin(ph)
    # shimmy: the shoulders go forward and back in turn, one up as the other drops; loose arms follow
    bounce = 4.0 * a * _up(2.0 * ph)
    out = _stand(chest_twist=11.0 * a * s, chest_roll=4.0 * a * math.cos(ph), spine_twist=-3.0 * a * s,
                 knee_l=6.0 + bounce, knee_r=6.0 + bounce, hip_l_flex=0.5 * bounce, hip_r_flex=0.5 * bounce)
    lag = math.sin(ph - 0.8)
    out.update(shoulder_l_flex=8.0 + 10.0 * a * lag, shoulder_r_flex=8.0 - 10.0 * a * lag,
               elbow_l=30.0 + 8.0 * a * math.sin(ph - 1.5), elbow_r=30.0 - 8.0 * a * math.sin(ph - 1.5),
               shoulder_l_abd=18.0, shoulder_r_abd=18.0)
    return out


MOTIONS: dict[str, Motion] = {m.name: m for m in (
    Motion("chicken_wings", _chicken_wings, 26.0,
           description="hands at the chest, bent arms flapping at the sides"),
    Motion("hips", _hips, 56.0, description="hip circles over planted feet"),
    Motion("jiggle_on_toes", _jiggle_on_toes, 22.0, description="rising on the toes and bouncing"),
    Motion("jumping_jacks", _jumping_jacks, 44.0,
           description="arms up over the head and legs apart, small jumps"),
    Motion("knees", _knees, 50.0, description="alternating knee raises towards the chest, arms swinging"),
    Motion("light_hopping_loose", _light_hopping_loose, 32.0,
           description="small two-footed hops, loose arms"),
    Motion("light_hopping_stiff", _light_hopping_stiff, 28.0,
           description="small hops from the ankles, body stiff"),
    Motion("one_leg_jump", _one_leg_jump, 32.0,
           description="hopping on the left leg, right shin lifted back"),
    Motion("one_leg_loose", _one_leg_loose, 20.0, description="standing on the left leg, shaking the right"),
    Motion("punching", _punching, 34.0, description="alternating forward punches from the guard"),
    Motion("running_on_spot", _running_on_spot, 40.0,
           description="running in place, heels up, arms swinging"),
    Motion("shake_arms", _shake_arms, 16.0, description="both arms shaken loosely"),
    Motion("shake_hips", _shake_hips, 20.0, description="quick side-to-side hip shake"),
    Motion("shake_shoulders", _shake_shoulders, 18.0, description="shoulder shimmy, loose arms following"),
)}
"""The registry of motions, by name (D-FAUST's 14 motion names)."""


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
    """The motion called ``name``; raises ValueError listing the valid names."""
    if name not in MOTIONS:
        raise ValueError(f"unknown motion {name!r}; valid: {sorted(MOTIONS)}")
    return MOTIONS[name]
