"""The bad-input corpus of issue 17: every row that did not hold, and a representative set of kinds that did.

Each :class:`Case` is one bad input or fault, a command line, the expected exit status (2 usage, 1 bad
data or I/O, 130 interrupted, 0 where the right answer is to carry on with a warning or to replace an
earlier output on request) and the texts the message must contain: the file or key it names. Setups
copy tiny templates into the case's workspace and break one thing.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from tests.bad_inputs.harness import Case, Workspace, oflow_train_argv, sof_train_argv
from toolkit.oflow.data import write_pcl_frame, write_points_frame

SHIPPED_SOF = Path(__file__).resolve().parents[2] / "data" / "sof_synthetic.pt"
SHIPPED_OFLOW = Path(__file__).resolve().parents[2] / "data" / "oflow_completion.pt"
BAD_NAME = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8

# ------------------------------------------------------------------------------------------ SOF setups


def sof(edit=None, rel="sof"):
    """Setup: a copy of the SOF template, then ``edit(root)``; values {d} (root) and {i} (first instance)."""
    def setup(w: Workspace):
        root = w.sof(rel)
        if edit is not None:
            edit(root)
        return {"d": root, "i": root / "00000"}
    return setup


def _png(path: Path, array, mode=None):
    path.unlink(missing_ok=True)
    Image.fromarray(np.asarray(array), mode=mode).save(path)


def _npy(path: Path, fn):
    np.save(path, fn(np.load(path)))


def _labels_twice_as_large(root: Path):
    """Instance 00000's label maps at 32 px beside its 16 px intrinsics, no meta.json, no depth."""
    inst = root / "00000"
    for p in inst.glob("seg_*.png"):
        a = np.array(Image.open(p))
        _png(p, a.repeat(2, 0).repeat(2, 1), "L" if a.ndim == 2 else None)
    for p in [*inst.glob("depth_*.png"), inst / "zRange.npy"]:
        p.unlink()
    (root / "meta.json").unlink()


def _set_k(v, idx, value):
    k = np.array(v, dtype=np.float64)
    k.reshape(-1, 3, 3)[(slice(None), *idx)] = value
    return k


def _rename_instance(root: Path):
    os.rename(root / "00001", root / BAD_NAME)


def _seg_as_folder(root: Path):
    (root / "00000/seg_01.png").unlink()
    (root / "00000/seg_01.png").mkdir()


def _seg_symlink_loop(root: Path):
    p = root / "00000/seg_01.png"
    p.unlink()
    p.symlink_to(p.name)


def _no_vis_message(w, result):
    assert "visualisation without its label map" not in result.output, result.output


SOF_VALIDATE = [
    # held: kinds that already got a clear message naming the file
    ("sof_good", sof(), 0, ["OK (sof format)"]),
    ("sof_missing_cam2world", sof(lambda r: (r / "00000/cam2world.npy").unlink()), 1, ["{i}/cam2world.npy"]),
    ("sof_missing_intrinsics", sof(lambda r: (r / "00000/intrinsic.npy").unlink()), 1, ["{i}/intrinsic.npy"]),
    ("sof_intrinsics_plural_name", sof(lambda r: (r / "00000/intrinsic.npy").rename(r / "00000/intrinsics.npy")),
     1, ["{i}/intrinsic.npy", "found intrinsics.npy"]),
    ("sof_label_id_out_of_range", sof(lambda r: _png(r / "00000/seg_01.png", np.full((16, 16), 25, np.uint8))), 1,
     ["{i}/seg_01.png", "out of range"]),
    ("sof_rgb_label_map", sof(lambda r: _png(r / "00000/seg_01.png", np.zeros((16, 16, 3), np.uint8))), 1,
     ["{i}/seg_01.png", "single-channel"]),
    ("sof_corrupt_png", sof(lambda r: (r / "00000/seg_01.png").write_bytes(b"\x89PNG broken")), 1,
     ["{i}/seg_01.png", "unreadable PNG"]),
    ("sof_meta_not_json", sof(lambda r: (r / "meta.json").write_text("{nope")), 1, ["{d}/meta.json", "not valid JSON"]),
    ("sof_meta_bad_projection", sof(lambda r: (r / "meta.json").write_text('{"projection": "fisheye"}')), 1,
     ["{d}/meta.json", "projection 'fisheye'"]),
    ("sof_image_size_vs_meta", sof(lambda r: _png(r / "00000/seg_02.png", np.zeros((8, 8), np.uint8), "L")), 1,
     ["{i}/seg_02.png", "does not match meta.json image_size 16"]),
    ("sof_exclusion_unknown_instance", sof(lambda r: (r / "excluded_views.json").write_text('{"zz": [0]}')), 1,
     ["{d}/excluded_views.json", "'zz'"]),
    ("sof_vis_without_label", sof(lambda r: (r / "00000/seg_02.png").unlink()), 1,
     ["{i}/seg_vis_02.png", "without its label map"]),
    ("sof_duplicate_view_id", sof(lambda r: shutil.copy(r / "00000/seg_01.png", r / "00000/seg_1.png")), 1,
     ["{i}/seg_1.png", "duplicate view id 1"]),
    ("sof_pose_count", sof(lambda r: _npy(r / "00000/cam2world.npy", lambda a: a[:2])), 1,
     ["{i}/cam2world.npy", "pose count mismatch"]),
    ("sof_non_rigid_pose", sof(lambda r: _npy(r / "00000/cam2world.npy", lambda a: a * [[[2]], [[1]], [[1]]])), 1,
     ["{i}/cam2world.npy", "not a rigid"]),
    ("sof_nan_intrinsics", sof(lambda r: _npy(r / "00000/intrinsic.npy", lambda k: _set_k(k, (0, 0), np.nan))), 1,
     ["{i}/intrinsic.npy", "NaN"]),
    ("sof_negative_focal", sof(lambda r: _npy(r / "00000/intrinsic.npy", lambda k: _set_k(k, (1, 1), -3.0))), 1,
     ["{i}/intrinsic.npy", "must be > 0"]),
    ("sof_zrange_order", sof(lambda r: _npy(r / "00000/zRange.npy", lambda z: z[:, ::-1])), 1,
     ["{i}/zRange.npy", "near < far"]),
    ("sof_empty_dataset", lambda w: {"d": w.path("empty"), "_": w.path("empty").mkdir()}, 1,
     ["{d}", "empty dataset"]),
    ("sof_instance_folder_given", sof(), 1, ["{i}", "pass its parent"]),
    ("sof_file_looking_like_view", sof(lambda r: shutil.copy(r / "00000/seg_01.png", r / "00000/seg01.png")), 1,
     ["{i}/seg01.png", "unexpected file"]),
    # silent before: accepted by validate, then wrong or failing in training
    ("sof_labels_64px_intrinsics_32px_no_meta", sof(_labels_twice_as_large), 1,
     ["{i}/intrinsic.npy", "principal point", "another image size"]),
    ("sof_principal_point_outside", sof(lambda r: _npy(r / "00000/intrinsic.npy",
                                                       lambda k: _set_k(k, (0, 2), 100.0))), 1,
     ["{i}/intrinsic.npy", "outside the image"]),
    ("sof_rgb_depth_map", sof(lambda r: _png(r / "00000/depth_00.png", np.zeros((16, 16, 3), np.uint8))), 1,
     ["{i}/depth_00.png", "single-channel 8- or 16-bit depth map"]),
    ("sof_depth_map_wrong_size", sof(lambda r: _png(r / "00000/depth_00.png", np.full((8, 8), 300, np.uint16))), 1,
     ["{i}/depth_00.png", "differs from its label map"]),
    ("sof_non_utf8_instance_name", sof(_rename_instance), 1, ["{d}/" + BAD_NAME, "not valid UTF-8"]),
    # unclear before
    ("sof_label_png_is_a_folder", sof(_seg_as_folder), 1, ["{i}/seg_01.png", "a folder; expected a PNG file"]),
    ("sof_label_png_symlink_loop", sof(_seg_symlink_loop), 1, ["{i}/seg_01.png", "symlink loop"]),
]
ISSUE_OF = {"sof_labels_64px_intrinsics_32px_no_meta": "silent", "sof_principal_point_outside": "silent",
            "sof_rgb_depth_map": "silent", "sof_depth_map_wrong_size": "silent",
            "sof_non_utf8_instance_name": "silent", "sof_label_png_is_a_folder": "unclear",
            "sof_label_png_symlink_loop": "unclear"}
CHECKS = {"sof_label_png_is_a_folder": _no_vis_message, "sof_label_png_symlink_loop": _no_vis_message}

CASES: list[Case] = []
for name, setup, code, expect in SOF_VALIDATE:
    target = "{i}" if name == "sof_instance_folder_given" else "{d}"
    CASES.append(Case(name, ISSUE_OF.get(name, "held"), ["validate", target], code, expect, setup,
                      check=CHECKS.get(name)))


# ------------------------------------------------------------------------------------------ OFlow setups


def oflow(edit=None):
    """Setup: a copy of the moving-sphere template, then ``edit(root)``; values {d}, {s0}, {s1}."""
    def setup(w: Workspace):
        root = w.oflow()
        if edit is not None:
            edit(root)
        return {"d": root, "s0": root / "s0", "s1": root / "s1", "run": w.path("run")}
    return setup


def _rewrite_npz(path: Path, **changes):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v(arrays[k]) if callable(v) else v
    path.unlink()
    np.savez(path, **arrays)


def _drop_frames(root: Path, seq: str, keep: int):
    for field in ("points_seq", "pcl_seq"):
        for p in sorted((root / seq / field).glob("*.npz"))[keep:]:
            p.unlink()


def _rename_sequence(root: Path):
    os.rename(root / "s1", root / BAD_NAME)
    for lst in root.glob("*.lst"):
        lst.write_text("s0\n")


F3 = "s0/points_seq/00000003.npz"
OFLOW_VALIDATE = [
    ("oflow_good", oflow(), 0, ["OK (oflow format)"]),
    ("oflow_corrupt_npz", oflow(lambda r: (r / F3).write_bytes(b"PK\x03\x04 cut")), 1, ["{d}/" + F3, "corrupt"]),
    ("oflow_wrong_dtype", oflow(lambda r: _rewrite_npz(r / F3, points=lambda a: a.astype(np.float32))), 1,
     ["{d}/" + F3, "points has dtype float32"]),
    ("oflow_missing_key", oflow(lambda r: _rewrite_npz(r / F3, loc=None)), 1, ["{d}/" + F3, "missing keys ['loc']"]),
    ("oflow_non_finite", oflow(lambda r: _rewrite_npz(r / F3, points=lambda a: np.where(a > 0.5, np.nan, a)
                                                        .astype(np.float16))), 1, ["{d}/" + F3, "non-finite"]),
    ("oflow_bad_frame_name", oflow(lambda r: shutil.copy(r / F3, r / "s0/points_seq/frame3.npz")), 1,
     ["{d}/s0/points_seq/frame3.npz", "unparsable frame name"]),
    ("oflow_frame_gap", oflow(lambda r: [(r / f"s0/{f}/00000005.npz").unlink() for f in ("points_seq", "pcl_seq")]),
     1, ["{d}/s0/points_seq", "not consecutive"]),
    ("oflow_pcl_count_differs", oflow(lambda r: _rewrite_npz(r / "s0/pcl_seq/00000003.npz",
                                                             points=lambda a: a[:100])), 1,
     ["{d}/s0/pcl_seq/00000003.npz", "100 points, but most frames have 128"]),
    ("oflow_occupancies_length", oflow(lambda r: _rewrite_npz(r / F3, occupancies=lambda a: a[:10])), 1,
     ["{d}/" + F3, "occupancies has shape (10,)"]),
    ("oflow_frame_count_mismatch", oflow(lambda r: (r / "s0/pcl_seq/00000016.npz").unlink()), 1,
     ["{d}/s0", "frame count mismatch"]),
    ("oflow_loc_mismatch", oflow(lambda r: _rewrite_npz(r / F3, loc=lambda a: (a + 1).astype(np.float16))), 1,
     ["{d}/" + F3, "differ from pcl_seq"]),
    ("oflow_split_names_missing", oflow(lambda r: (r / "train.lst").write_text("s0\ns9\n")), 1,
     ["{d}/train.lst", "'s9' not found"]),
    ("oflow_empty_sequence_folder", oflow(lambda r: (r / "s2").mkdir()), 1, ["{d}/s2", "empty sequence folder"]),
    # silent before
    ("oflow_empty_train_lst", oflow(lambda r: (r / "train.lst").write_text("")), 1, ["{d}/train.lst", "empty split"]),
    ("oflow_duplicate_lst_entry", oflow(lambda r: (r / "train.lst").write_text("s0\ns1\ns0\n")), 1,
     ["{d}/train.lst", "'s0' listed twice"]),
    ("oflow_crlf_lst", oflow(lambda r: (r / "train.lst").write_bytes(b"s0\r\ns1\r\n")), 1, ["{d}/train.lst", "CRLF"]),
    ("oflow_non_utf8_sequence_name", oflow(_rename_sequence), 1, ["{d}/" + BAD_NAME, "not valid UTF-8"]),
]
for name, setup, code, expect in OFLOW_VALIDATE:
    issue = "silent" if name in ("oflow_empty_train_lst", "oflow_duplicate_lst_entry", "oflow_crlf_lst",
                                 "oflow_non_utf8_sequence_name") else "held"
    CASES.append(Case(name, issue, ["validate", "{d}"], code, expect, setup))

CASES += [
    Case("validate_missing_path", "held", ["validate", "{ws}/nowhere"], 1, ["{ws}/nowhere", "no such file"]),
    Case("oflow_no_sequences", "held", ["validate", "--format", "oflow", "{d}"], 1, ["{d}", "no sequences found"],
         lambda w: {"d": w.path("e"), "_": w.path("e").mkdir()}),
    Case("oflow_short_sequence_validate_window", "silent", ["validate", "{d}", "--window", "17"], 1,
         ["{d}/s1", "5 frame(s), fewer than a 17-frame window"], oflow(lambda r: _drop_frames(r, "s1", 5))),
    Case("validate_window_on_sof", "held", ["validate", "{d}", "--window", "17"], 2, ["--window"], sof()),
    # training on such data: one line naming the list, or a warning naming what is skipped
    Case("oflow_train_empty_train_lst", "silent", oflow_train_argv("{d}", "{run}"), 1, ["{d}/train.lst", "empty"],
         oflow(lambda r: (r / "train.lst").write_text(""))),
    Case("oflow_train_duplicate_lst_entry", "silent", oflow_train_argv("{d}", "{run}"), 1,
         ["{d}/train.lst", "more than once"], oflow(lambda r: (r / "train.lst").write_text("s0\ns0\n"))),
    Case("oflow_train_skips_short_sequence_with_a_warning", "silent", oflow_train_argv("{d}", "{run}"), 0,
         ["warning:", "not used: [s1]"], oflow(lambda r: _drop_frames(r, "s1", 5))),
    Case("oflow_train_non_utf8_sequence_name", "traceback", oflow_train_argv("{d}", "{run}", "train_split=null"), 1,
         [BAD_NAME, "not valid UTF-8"], oflow(_rename_sequence)),
]


# ------------------------------------------------------------------------------------------ occupancy


def _sphere(n, seed=0, r=0.45, z_min=None):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    v = v / np.linalg.norm(v, axis=1, keepdims=True) * r
    return v if z_min is None else v[v[:, 2] > z_min]


def scan(frames=3, points=lambda f: _sphere(8000, f), derived=False, exact=False, corrupt=None):
    """Setup: a scan sequence ``scan/seq`` with pcl_seq only; optionally a derived or exact points_seq."""
    def setup(w: Workspace):
        seq = w.path("scan/seq")
        for f in range(frames):
            write_pcl_frame(seq / "pcl_seq" / f"{f:08d}.npz", points(f), np.zeros(3), 1.0)
        if derived:
            from toolkit.oflow.occupancy import derive_scan_occupancy

            derive_scan_occupancy(seq, n_points=500, progress=False)
        if exact:
            for f in range(frames):
                pts = np.random.default_rng(f).uniform(-0.55, 0.55, (500, 3))
                write_points_frame(seq / "points_seq" / f"{f:08d}.npz", pts, np.linalg.norm(pts, axis=1) < 0.45,
                                   np.zeros(3), 1.0)
        if corrupt is not None:
            (seq / "pcl_seq" / f"{corrupt:08d}.npz").write_bytes(b"PK\x03\x04 cut")
        return {"seq": seq}
    return setup


def _validates(w, result):
    from toolkit.oflow.data import validate_dataset

    assert validate_dataset(w.path("scan")) == []


CASES += [
    Case("occupancy_derives_points_seq", "held", ["occupancy", "{seq}"], 0, ["{seq}/points_seq"], scan(frames=2),
         check=_validates),
    Case("occupancy_keeps_existing_exact_labels", "lost", ["occupancy", "{seq}"], 1,
         ["{seq}/points_seq", "--overwrite"], scan(exact=True)),
    Case("occupancy_overwrite_never_replaces_exact_labels", "lost", ["occupancy", "{seq}", "--overwrite"], 1,
         ["{seq}/points_seq", "refusing to replace it"], scan(exact=True)),
    Case("occupancy_corrupt_middle_frame_leaves_points_seq_whole", "lost", ["occupancy", "{seq}", "--overwrite"], 1,
         ["{seq}/pcl_seq/00000001.npz", "not a readable .npz"], scan(derived=True, corrupt=1)),
    Case("occupancy_corrupt_middle_frame_writes_nothing", "lost", ["occupancy", "{seq}"], 1,
         ["{seq}/pcl_seq/00000001.npz"], scan(corrupt=1),
         check=lambda w, r: _nothing_left(w.path("scan/seq"), {"pcl_seq"})),
    Case("occupancy_fewer_than_16_points", "traceback", ["occupancy", "{seq}"], 1,
         ["{seq}/pcl_seq/00000000.npz", "need at least 16 surface points"], scan(points=lambda f: _sphere(10, f))),
    Case("occupancy_all_equal_points", "traceback", ["occupancy", "{seq}"], 1,
         ["{seq}/pcl_seq/00000000.npz", "are equal"], scan(points=lambda f: np.full((100, 3), 0.1))),
    Case("occupancy_open_surface", "silent", ["occupancy", "{seq}"], 1,
         ["{seq}/pcl_seq/00000000.npz", "enclose no volume", "open scan"],
         scan(points=lambda f: _sphere(8000, f, z_min=0.0))),
    Case("occupancy_no_pcl_seq", "held", ["occupancy", "{d}"], 1, ["{d}", "no pcl_seq/ folder"],
         lambda w: {"d": w.path("x"), "_": w.path("x").mkdir()}),
    Case("occupancy_frame_gap", "held", ["occupancy", "{seq}"], 1, ["{seq}/pcl_seq", "not consecutive"],
         lambda w: {**scan()(w), "_": (w.path("scan/seq/pcl_seq/00000001.npz")).unlink()}),
]


def _nothing_left(folder: Path, expected: set[str]):
    names = {p.name for p in folder.iterdir()}
    assert names == expected, names


# ------------------------------------------------------------------------------------------ synth


def existing_portraits(rel="D"):
    def setup(w: Workspace):
        return {"D": w.sof(rel)}
    return setup


def _foreign_folder(w: Workspace):
    d = w.path("D")
    d.mkdir()
    (d / "thesis.tex").write_text("my work")
    return {"D": d}


def _replaced_whole(w, result):
    from toolkit.sof.data import read_meta, validate_dataset

    assert validate_dataset(w.path("D")) == [] and read_meta(w.path("D")).image_size == 8
    assert len(list(w.path("D/00000").glob("seg_??.png"))) == 2
    assert not [p for p in w.root.iterdir() if p.name.startswith(".")]  # no staging folder left


def _race(w: Workspace):
    """Another run finishes the same dataset folder while this one is writing."""
    import toolkit.sof.data as sof_data

    real = sof_data.write_meta
    other = w.templates.sof

    def write_meta_after_the_other_run(root, **kw):
        shutil.copytree(other, w.path("D"))
        return real(root, **kw)

    w.monkeypatch.setattr(sof_data, "write_meta", write_meta_after_the_other_run)
    return {"D": w.path("D")}


def _other_run_kept(w, result):
    from tests.bad_inputs.harness import snapshot

    ours = {k: v[2] for k, v in snapshot(w.path("D")).items()}
    assert ours == {k: v[2] for k, v in snapshot(w.templates.sof).items()}
    assert not [p for p in w.root.iterdir() if p.name.startswith(".")]


def _readonly(rel="ro"):
    def setup(w: Workspace):
        d = w.path(rel)
        d.mkdir()
        d.chmod(0o555)
        return {"ro": d}
    return setup


def _fake_bodies(w: Workspace):
    d = w.path("B/synthetic")
    d.mkdir(parents=True)
    (d / "bodies.json").write_text("{}")
    return {"B": w.path("B")}


SYNTH = ["synth", "portraits", "{D}", "--instances", "2", "--views", "2"]
CASES += [
    Case("synth_other_size_into_existing", "lost", [*SYNTH, "--size", "32"], 1, ["{D}", "--overwrite"],
         existing_portraits()),
    Case("synth_other_projection_into_existing", "lost", [*SYNTH, "--size", "16", "--projection", "perspective"], 1,
         ["{D}", "--overwrite"], existing_portraits()),
    Case("synth_overwrite_replaces_the_whole_dataset", "lost", [*SYNTH, "--size", "8", "--overwrite"], 0,
         ["wrote {D}"], existing_portraits(), may_change=("D/*", "D/*/*"), check=_replaced_whole),
    Case("synth_overwrite_refuses_a_foreign_folder", "lost", [*SYNTH, "--size", "8", "--overwrite"], 1,
         ["{D}", "refusing to replace it"], _foreign_folder),
    Case("synth_two_runs_into_one_folder", "lost", [*SYNTH, "--size", "8"], 1, ["{D}", "appeared while writing"],
         _race, check=_other_run_kept),
    Case("synth_bodies_into_existing", "lost", ["synth", "bodies", "{B}", "--sequences", "1", "--frames", "2"], 1,
         ["{B}", "--overwrite"], _fake_bodies),
    Case("synth_zero_instances", "traceback", ["synth", "portraits", "{ws}/D", "--instances", "0"], 2,
         ["--instances", "expected an integer >= 1"]),
    Case("synth_negative_size", "traceback", ["synth", "portraits", "{ws}/D", "--size", "-4"], 2, ["--size"]),
    Case("synth_negative_seed", "traceback", ["synth", "portraits", "{ws}/D", "--seed", "-1"], 2, ["--seed"]),
    Case("synth_bodies_zero_frames", "traceback", ["synth", "bodies", "{ws}/B", "--frames", "0"], 2, ["--frames"]),
    Case("synth_bodies_zero_sequences", "traceback", ["synth", "bodies", "{ws}/B", "--sequences", "0"], 2,
         ["--sequences"]),
    Case("synth_file_as_out", "traceback", [*SYNTH, "--size", "8"], 1, ["{D}", "not a folder"],
         lambda w: {"D": w.path("D.txt"), "_": w.path("D.txt").write_text("x")}),
    Case("synth_bodies_file_as_out", "traceback", ["synth", "bodies", "{D}", "--sequences", "1", "--frames", "2"], 1,
         ["{D}", "not a folder"], lambda w: {"D": w.path("D.txt"), "_": w.path("D.txt").write_text("x")}),
    Case("synth_into_read_only_folder", "traceback", ["synth", "portraits", "{ro}/D", "--instances", "1", "--views",
                                                      "1", "--size", "8"], 1, ["{ro}", "Permission denied"],
         _readonly(), mode="readonly"),
]


# ------------------------------------------------------------------------------------------ train


def fresh(w: Workspace):
    """Setup: a SOF dataset copy and a run folder path that does not exist yet."""
    return {"d": w.sof(), "run": w.path("run")}


def finished_run(w: Workspace):
    """Setup: a copy of the finished template run; {d} is the data it was trained on."""
    run = w.sof_run("run")[0]
    return {"run": run, "d": w.templates.sof}


def _held_lock(w: Workspace):
    import fcntl

    values = finished_run(w)
    f = open(values["run"] / ".lock", "a+")  # noqa: SIM115 - another run's process, holding the lock
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.seek(0)
    f.truncate()
    f.write("424242\n")
    f.flush()
    w.monkeypatch.setattr(w, "held_lock", f, raising=False)  # closed with the workspace
    return values


def _other_data(w: Workspace):
    values = finished_run(w)
    return {**values, "d": w.sof("other_data")}


def _orphans(w: Workspace):
    values = finished_run(w)
    ck = values["run"] / "checkpoints"
    (ck / ".step_00000003.pt.99999999-dead.tmp").write_bytes(b"half a checkpoint")
    (ck / ".step_00000003.pt.k2j4l1.tmp").write_bytes(b"old-style temp name")
    (values["run"] / ".history.json.99999999-dead.tmp").write_text("[")
    return values


def _orphans_gone(w, result):
    left = [p.name for p in w.path("run").rglob("*.tmp")]
    assert not left, left


def _config_file(text: str):
    def setup(w: Workspace):
        p = w.path("cfg.yaml")
        p.write_text(text)
        return {"cfg": p, **fresh(w)}
    return setup


def _full_disk_left_no_temp(w, result):
    ck = w.path("run/checkpoints")
    left = [p.name for p in ck.iterdir()] if ck.is_dir() else []
    assert not [n for n in left if n.endswith((".tmp", ".pt"))], left


def _interrupt_checkpoint(w, result):
    # one line after the progress bar, naming a checkpoint that is there
    lines = [ln for ln in result.err.replace("\r", "\n").splitlines() if ln.strip() and "it/s" not in ln]
    assert len(lines) == 1 and lines[0].startswith("training interrupted"), result.err
    path = lines[0].split("checkpoint in ")[-1].strip()
    assert Path(path).is_file(), path


def _readonly_run(w: Workspace):
    values = fresh(w)
    values["run"].mkdir()
    values["run"].chmod(0o555)
    return values


S = sof_train_argv("{d}", "{run}")
CASES += [
    Case("train_set_lr_abc", "traceback", [*S, "--set", "lr=abc"], 2, ["--set lr=abc", "expected a number > 0"], fresh),
    Case("train_set_max_steps_negative", "traceback", [*S, "--set", "max_steps=-5"], 2,
         ["--set max_steps=-5", "expected an integer >= 0"], fresh),
    Case("train_set_batch_size_zero", "traceback", [*S, "--set", "batch_size=0"], 2,
         ["--set batch_size=0", "expected an integer >= 1"], fresh),
    Case("train_set_num_rays_zero", "traceback", [*S, "--set", "num_rays=0"], 2, ["--set num_rays=0", ">= 1"], fresh),
    Case("train_set_lr_nan", "traceback", [*S, "--set", "lr=.nan"], 2, ["--set lr=.nan", "a number > 0"], fresh),
    Case("train_unknown_loss_key", "traceback", [*S, "--set", "loss.focal=2"], 2,
         ["unknown key 'focal' in loss", "--set loss.focal=2", "valid: ['depth_supervision'"], fresh),
    Case("train_unknown_stage", "traceback", [*S, "--set", "stage=stage3"], 2,
         ["--set stage=stage3", "['multiview', 'inverse']"], fresh),
    Case("train_unknown_model_overrides_key", "traceback", [*S, "--set", "model_overrides.depth=3"], 2,
         ["unknown key 'depth' in model_overrides", "valid:"], fresh),
    Case("train_model_overrides_bad_value", "traceback", [*S, "--set", "model_overrides.latent_dim=0"], 2,
         ["model_overrides", "latent_dim"], fresh),
    Case("train_set_without_equals", "traceback", [*S, "--set", "max_steps"], 2, ["--set max_steps", "key=value"],
         fresh),
    Case("train_set_into_a_number", "traceback", [*S, "--set", "lr.x=1"], 2, ["--set lr.x=1", "not a mapping"], fresh),
    Case("train_set_loss_not_a_mapping", "traceback", [*S, "--set", "loss=3"], 2, ["--set loss=3", "mapping"], fresh),
    Case("train_set_device_unknown", "traceback", [*S, "--set", "device=gpu"], 2, ["--set device=gpu"], fresh),
    Case("train_set_synthetic_size_zero", "traceback", [*S, "--set", "synthetic.size=0"], 2,
         ["--set synthetic.size=0", ">= 1"], fresh),
    Case("train_set_milestone_zero", "traceback", [*S, "--set", "lr_milestones=[0]"], 2,
         ["--set lr_milestones=[0]"], fresh),
    Case("train_set_wrong_type_bool", "traceback", [*S, "--set", "optimize_camera=maybe"], 2,
         ["--set optimize_camera=maybe", "true or false"], fresh),
    Case("train_unknown_preset", "traceback", ["train", "sof", "--config", "nope"], 2, ["unknown sof config 'nope'"]),
    Case("train_unknown_key", "traceback", [*S, "--set", "learning_rate=1"], 2, ["unknown keys ['learning_rate']", "valid"],
         fresh),
    Case("train_config_file_missing", "held", ["train", "sof", "--config", "{ws}/none.yaml"], 1,
         ["{ws}/none.yaml", "config file not found"]),
    Case("train_config_invalid_yaml", "held", ["train", "sof", "--config", "{cfg}"], 1, ["{cfg}", "invalid YAML"],
         _config_file("lr: [1, 2\n")),
    Case("train_config_not_a_mapping", "held", ["train", "sof", "--config", "{cfg}"], 1, ["{cfg}", "mapping"],
         _config_file("- 1\n- 2\n")),
    Case("train_config_file_bad_value", "traceback", ["train", "sof", "--config", "{cfg}"], 2,
         ["{cfg}", "lr = 'fast'", "a number > 0"], _config_file("lr: fast\n")),
    Case("train_data_root_missing", "held", sof_train_argv("{ws}/nowhere", "{run}", "synthetic=null"), 1,
         ["{ws}/nowhere", "dataset folder not found"], fresh),
    Case("train_non_utf8_instance_name", "traceback", S, 1, ["{d}/" + BAD_NAME, "not valid UTF-8"],
         lambda w: {**fresh(w), "_": _rename_instance(w.path("sof"))}),
    Case("train_labels_64px_intrinsics_32px", "silent", S, 1, ["intrinsic.npy", "principal point"],
         lambda w: {**fresh(w), "_": _labels_twice_as_large(w.path("sof"))}),
    Case("train_rgb_depth_map", "silent", [*S, "--set", "loss.depth_supervision=1"], 1,
         ["depth_00.png", "single-channel"],
         lambda w: {**fresh(w), "_": _png(w.path("sof/00000/depth_00.png"), np.zeros((16, 16, 3), np.uint8))}),
    Case("train_same_run_folder_twice", "lost", S, 1, ["{run}", "another run (process 424242)"], _held_lock),
    Case("train_resume_on_other_data", "lost", S, 1, ["{run}", "other data", "new out_dir", "start fresh"],
         _other_data),
    Case("train_orphan_temps_removed", "unclear", S, 0, [], _orphans, may_change=("run/**/*.tmp", "run/*.tmp"),
         check=_orphans_gone),
    Case("train_full_disk", "traceback", [*sof_train_argv("{d}", "{run}", steps=1)], 1,
         ["{run}/checkpoints/step_00000001.pt", "cannot write"], fresh, mode="fsize", check=_full_disk_left_no_temp),
    Case("train_read_only_run_folder", "traceback", S, 1, ["{run}", "Permission denied"], _readonly_run,
         mode="readonly"),
    Case("train_interrupted", "traceback", sof_train_argv("{d}", "{run}", steps=100000), 130,
         ["training interrupted after step", "checkpoint in {run}/checkpoints/step_"], fresh, mode="sigint",
         check=_interrupt_checkpoint),
    # Occupancy Flow configs go through the same checks
    Case("train_oflow_lr_abc", "traceback", oflow_train_argv("{d}", "{run}", "lr=abc"), 2, ["--set lr=abc"], oflow()),
    Case("train_oflow_unknown_ode_option", "traceback", oflow_train_argv("{d}", "{run}", "ode_overrides.stepsize=1"),
         2, ["unknown ODE option 'stepsize' in ode_overrides", "valid"], oflow()),
    Case("train_oflow_unknown_preset_value", "traceback", oflow_train_argv("{d}", "{run}", "model_preset=huge"), 2,
         ["--set model_preset=huge", "valid values"], oflow()),
    Case("train_oflow_corr_times_too_large", "traceback", oflow_train_argv("{d}", "{run}", "corr_times=99"), 2,
         ["corr_times", "99"], oflow()),
    Case("train_oflow_length_one", "traceback", oflow_train_argv("{d}", "{run}", "length=1"), 2,
         ["--set length=1", ">= 2"], oflow()),
    Case("train_oflow_unknown_synthetic_key", "traceback", oflow_train_argv("{ws}/gen", "{run}", "synthetic.people=3"),
         2, ["unknown key 'people' in synthetic", "valid"], oflow()),
    Case("train_oflow_missing_split", "held", oflow_train_argv("{d}", "{run}", "train_split=nope"), 1,
         ["nope.lst", "not found"], oflow()),
]


# ------------------------------------------------------------------------------------------ eval


def _evil_checkpoint(w: Workspace):
    import torch

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = w.path("evil.pt")
    torch.save({"model": Evil()}, path)
    return {"ck": path, "d": w.templates.sof}


def _eval_setup(json_name=None, json_text=None, orphan=False):
    def setup(w: Workspace):
        values = {"ck": w.templates.sof_run, "d": w.templates.sof, "out": w.path("out")}
        w.path("out").mkdir()
        if json_text is not None:
            (w.path("out") / json_name).write_text(json_text)
        if orphan:
            (w.path("out") / ".m.json.99999999-dead.tmp").write_text("{")
        return values
    return setup


def _printed_then_failed(w, result):
    assert '"dataset_miou"' in result.out, result.out


def _json_written_orphan_gone(w, result):
    assert json.loads(w.path("out/m.json").read_text())["views"] > 0
    assert not list(w.path("out").glob("*.tmp"))


E = ["eval", "sof", "{ck}", "{d}"]
CASES += [
    Case("eval_sof_prints_and_writes_json", "held", [*E, "--json", "{out}/m.json"], 0, ['"dataset_miou"'],
         _eval_setup(), check=lambda w, r: json.loads(w.path("out/m.json").read_text())),
    Case("eval_json_folder_missing", "lost", [*E, "--json", "{out}/none/m.json"], 1,
         ["{out}/none", "folder for --json not found"], _eval_setup()),
    Case("eval_json_exists", "lost", [*E, "--json", "{out}/m.json"], 1, ["{out}/m.json", "--overwrite"],
         _eval_setup("m.json", '{"earlier": 1}')),
    Case("eval_json_is_a_folder", "traceback", [*E, "--json", "{out}"], 1, ["{out}", "is a folder"], _eval_setup()),
    Case("eval_json_full_disk", "lost", [*E, "--json", "{out}/m.json"], 1, ["{out}/m.json", "cannot write"],
         _eval_setup(), mode="fsize", check=_printed_then_failed),
    Case("eval_json_removes_orphan_temp", "unclear", [*E, "--json", "{out}/m.json"], 0, ['"dataset_miou"'],
         _eval_setup(orphan=True), may_change=("out/*.tmp",), check=_json_written_orphan_gone),
    Case("eval_checkpoint_missing", "held", ["eval", "sof", "{ws}/none.pt", "{d}"], 1,
         ["{ws}/none.pt", "checkpoint not found"], _eval_setup()),
    Case("eval_checkpoint_corrupt", "held", ["eval", "sof", "{ck}", "{d}"], 1, ["{ck}", "corrupt"],
         lambda w: {"ck": w.path("bad.pt"), "d": w.templates.sof, "_": w.path("bad.pt").write_bytes(b"PK junk")}),
    Case("eval_malicious_pickle", "unclear", ["eval", "sof", "{ck}", "{d}"], 1,
         ["{ck}", "GLOBAL posix.system", "arbitrary code execution"], _evil_checkpoint,
         check=lambda w, r: "pwned" not in r.output),
    Case("eval_sof_on_oflow_checkpoint", "held", ["eval", "sof", str(SHIPPED_OFLOW), "{d}"], 1,
         ["oflow_completion.pt", "not a SOF checkpoint"], lambda w: {"d": w.templates.sof}),
    Case("eval_sof_other_dataset", "held", [*E], 1, ["{d}", "not in this dataset"],
         lambda w: {"ck": w.templates.sof_run, "d": w.sof("other"),
                    "_": [shutil.rmtree(w.path("other/00001"))]}),
    Case("eval_sof_with_oflow_options", "unclear", [*E, "--split", "train"], 2, ["--split apply to oflow only"],
         _eval_setup()),
    Case("eval_oflow_points_negative", "silent", ["eval", "oflow", "{ck}", "{d}", "--points", "-5"], 2,
         ["--points", "-5"], _eval_setup()),
    Case("eval_oflow_max_windows_negative", "silent", ["eval", "oflow", "{ck}", "{d}", "--max-windows", "-1"], 2,
         ["--max-windows", "-1"], _eval_setup()),
    Case("eval_oflow_surface_points_zero", "silent", ["eval", "oflow", "{ck}", "{d}", "--surface-points", "0"], 2,
         ["--surface-points"], _eval_setup()),
    Case("eval_oflow_missing_split", "held", ["eval", "oflow", str(SHIPPED_OFLOW), "{d}", "--split", "nope"], 1,
         ["nope.lst", "not found"], oflow()),
]


# ------------------------------------------------------------------------------------------ convert, fit, misc


def masks(kind):
    def setup(w: Workspace):
        d = w.path("masks")
        if kind != "missing":
            d.mkdir()
        if kind == "rgb":
            _png(d / "1.png", np.zeros((8, 8, 3), np.uint8))
        elif kind == "ids":
            _png(d / "1.png", np.full((8, 8), 30, np.uint8), "L")
        elif kind == "oblong":
            _png(d / "1.png", np.zeros((8, 6), np.uint8), "L")
        elif kind == "good":
            _png(d / "1.png", np.zeros((8, 8), np.uint8), "L")
        return {"m": d, "o": w.path("conv")}
    return setup


CASES += [
    Case("convert_missing_folder", "held", ["convert", "celebamask", "{m}", "{o}"], 1, ["{m}", "not found"],
         masks("missing")),
    Case("convert_no_pngs", "held", ["convert", "celebamask", "{m}", "{o}"], 1, ["{m}", "no .png masks"], masks("none")),
    Case("convert_rgb_mask", "held", ["convert", "celebamask", "{m}", "{o}"], 1, ["{m}/1.png", "mode"], masks("rgb")),
    Case("convert_ids_above_18", "held", ["convert", "celebamask", "{m}", "{o}"], 1, ["{m}/1.png", "ids [30]"],
         masks("ids")),
    Case("convert_not_square", "held", ["convert", "celebamask", "{m}", "{o}"], 1, ["{m}/1.png", "square"],
         masks("oblong")),
    Case("convert_size_zero", "traceback", ["convert", "celebamask", "{m}", "{o}", "--size", "0"], 2, ["--size"],
         masks("good")),
    Case("fit_existing_output", "held", ["fit", "sof", str(SHIPPED_SOF), "{m}", "{o}"], 1, ["{o}", "output folder exists"],
         lambda w: {**masks("good")(w), "_": w.path("conv").mkdir()}),
    Case("fit_rgb_masks", "held", ["fit", "sof", str(SHIPPED_SOF), "{m}", "{o}"], 1, ["{m}/1.png"], masks("rgb")),
    Case("notebooks_only_unknown", "traceback", ["notebooks", "--only", "99"], 2, ["notebook '99'", "available"]),
    Case("unknown_command", "held", ["frobnicate"], 2, ["invalid choice: 'frobnicate'"]),
    Case("train_without_config", "held", ["train", "sof"], 2, ["--config"]),
    Case("eval_missing_argument", "held", ["eval", "oflow"], 2, ["checkpoint"]),
]

_ids = [c.id for c in CASES]
assert len(_ids) == len(set(_ids)), sorted({i for i in _ids if _ids.count(i) > 1})
