"""Procedural semantic portraits: the analytic renderer against an independent march of the label field,
the class inventory, conventions (left/right, clip ball, frontal view) and the dataset writer."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from toolkit.geometry.cameras import generate_rays, orbit_cameras, pixel_grid, portrait_intrinsics
from toolkit.io import DataError, load_npy, read_label_png
from toolkit.labels import SOF20
from toolkit.synthetic.heads import (
    CLIP_RADIUS,
    HAIR_STYLES,
    HeadParams,
    SyntheticHead,
    alignment,
    head_from_seed,
    load_head,
    portrait_cameras,
    sample_head,
    write_portrait_dataset,
)

ID = {name: i for i, name in enumerate(SOF20.names)}
FRONTAL_ORTHO = orbit_cameras(4.5, 0.0, 0.0)


def march_labels(field, origins: torch.Tensor, directions: torch.Tensor, *, radius: float = 1.5, step: float = 0.01,
                 block: int = 48, bisections: int = 16) -> torch.Tensor:
    """Reference renderer: label just behind the first non-background point of ``field`` along each ray.

    Marches each ray in uniform steps through the sphere of ``radius`` (where SOF starts marching), then
    bisects the first background -> non-background step. Shares nothing with the analytic renderer
    except the label field it samples. origins, directions: (M, 3) -> (M,) int64 labels.
    """
    out = torch.zeros(origins.shape[0], dtype=torch.long)
    ob = (origins * directions).sum(-1)
    disc = ob * ob - (origins * origins).sum(-1) + radius ** 2
    root = disc.clamp(min=0).sqrt()
    t_near, t_far = (-ob - root).clamp(min=0), -ob + root
    active = (disc > 0).nonzero()[:, 0]
    offsets = torch.arange(block, dtype=origins.dtype) * step
    k0 = 0
    while active.numel():
        t = t_near[active, None] + k0 * step + offsets                                  # (A, block)
        pts = origins[active, None] + t[..., None] * directions[active, None]
        lab = field(pts.reshape(-1, 3)).reshape(t.shape)
        lab = torch.where(t <= t_far[active, None], lab, torch.zeros_like(lab))
        hit = (lab > 0).any(1)
        first = (lab > 0).to(torch.uint8).argmax(1)
        rays = active[hit]
        hi = t[hit, first[hit]]
        lo = hi - step
        o, d = origins[rays], directions[rays]
        for _ in range(bisections):
            mid = 0.5 * (lo + hi)
            inside = field(o + mid[:, None] * d) > 0
            hi, lo = torch.where(inside, mid, hi), torch.where(inside, lo, mid)
        out[rays] = field(o + hi[:, None] * d)
        active = active[~hit & (t[:, -1] + step <= t_far[active])]
        k0 += block
    return out


def marched_render(head: SyntheticHead, cams: np.ndarray, K: np.ndarray, size: int, projection: str) -> np.ndarray:
    Ks = torch.tensor(K, dtype=torch.float32).expand(len(cams), 3, 3)
    rays = generate_rays(torch.tensor(cams, dtype=torch.float32), Ks, pixel_grid(size, size), projection)
    labels = march_labels(head.label, rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3))
    return labels.reshape(len(cams), size, size).numpy()


def _centroid(labels: np.ndarray, *names: str) -> np.ndarray:
    """(column, row) mean of the pixels of some classes."""
    rows, cols = np.nonzero(np.isin(labels, [ID[n] for n in names]))
    return np.array([cols.mean(), rows.mean()])


def _decorated(seed: int, **changes) -> HeadParams:
    return dataclasses.replace(sample_head(np.random.default_rng(seed)), **changes)


@pytest.mark.parametrize("projection", ["ortho", "perspective"])
def test_render_matches_marched_label_field(projection):
    torch.manual_seed(0)
    heads = [SyntheticHead(_decorated(11, hair_style="long", earrings=True, necklace=True, glasses=True, hat=False,
                                      neckline="scoop")),
             SyntheticHead(_decorated(12, hair_style="bun", earrings=True, necklace=False, glasses=True, hat=True))]
    size = 64
    K = portrait_intrinsics(size, projection)
    agree, total = 0, 0
    for i, head in enumerate(heads):
        cams = portrait_cameras(3, np.random.default_rng(i), projection)
        fast = head.render(cams, K, size, size, projection=projection, device="cpu")
        ref = marched_render(head, cams, K, size, projection)
        assert (ref > 0).mean() > 0.15, "the reference saw almost nothing: wrong camera setup?"
        agree += int((fast == ref).sum())
        total += fast.size
    assert agree / total >= 0.995, f"render/field agreement {agree / total:.4f} < 0.995"


def test_every_class_appears_in_twenty_heads():
    K = portrait_intrinsics(64, "ortho")
    cams = orbit_cameras(4.5, np.array([0.0, 0.7, -0.7]), np.array([0.0, 0.2, -0.2]))
    seen, styles = set(), set()
    for seed in range(20):
        head = head_from_seed(seed)
        styles.add(head.params.hair_style)
        seen |= set(np.unique(head.render(cams, K, 64, 64, device="cpu")).tolist())
    missing = [SOF20.names[c] for c in range(SOF20.num_classes) if c not in seen]
    assert not missing, f"classes never rendered in 20 heads: {missing}"
    assert len(styles) >= 3, styles


def test_left_right_are_the_persons():
    head = SyntheticHead(_decorated(3, hair_style="short", hat=False, glasses=False))
    frontal = head.render(FRONTAL_ORTHO, portrait_intrinsics(128, "ortho"), 128, 128, device="cpu")
    for left, right in (("l_eye", "r_eye"), ("l_brow", "r_brow"), ("l_ear", "r_ear"), ("l_nose", "r_nose")):
        cols_l, cols_r = np.nonzero(frontal == ID[left])[1], np.nonzero(frontal == ID[right])[1]
        assert cols_l.size >= 4 and cols_r.size >= 4, (left, cols_l.size, right, cols_r.size)
        # The person's left appears on the image's right in a frontal view.
        assert cols_l.min() >= 64 > cols_r.max(), (left, cols_l.min(), right, cols_r.max())
    # In 3D, the person's left is world +x; the nose halves split exactly at x = 0.
    xyz = torch.rand(200_000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.4, 0.8, 1.2]) \
        - torch.tensor([0.7, 0.0, 0.3])
    lab = head.label(xyz)
    for name in ("l_eye", "l_brow", "l_nose", "l_ear"):
        assert (xyz[lab == ID[name], 0] >= 0).all() and (lab == ID[name]).any(), name
    for name in ("r_eye", "r_brow", "r_nose", "r_ear"):
        assert (xyz[lab == ID[name], 0] < 0).all() and (lab == ID[name]).any(), name


def test_features_are_visible_and_portrait_fills_the_frame():
    head = SyntheticHead(_decorated(5, hair_style="short", hat=False, glasses=False, earrings=True,
                                    mouth_open=0.1))
    frontal = head.render(FRONTAL_ORTHO, portrait_intrinsics(128, "ortho"), 128, 128, device="cpu")
    counts = np.bincount(frontal.ravel(), minlength=20)
    for name in ("l_eye", "r_eye", "l_brow", "r_brow", "u_lip", "l_lip", "mouth", "ear_r"):
        assert counts[ID[name]] >= 6, (name, counts[ID[name]])
    rows = np.nonzero((frontal > 0).any(1))[0]
    assert rows.max() - rows.min() >= 80, "the bust should span most of the image height"
    skin_cols = np.nonzero((frontal == ID["skin"]).any(0))[0]
    assert skin_cols.max() - skin_cols.min() >= 30


def test_frontal_view_is_the_aligned_crop_of_its_eyes_and_mouth():
    """The CelebA-HQ / FFHQ alignment computed from the rendered eyes and lips of the frontal view is the
    image itself: crop side = image side, crop centre = image centre (landmarks from label centroids)."""
    size = 256
    K = portrait_intrinsics(size, "ortho")
    for seed in range(6):
        head = SyntheticHead(_decorated(seed, glasses=False, hat=False))
        frontal = head.render(FRONTAL_ORTHO, K, size, size, device="cpu")

        e_left, e_right, mouth = (_centroid(frontal, *names) for names in (("r_eye",), ("l_eye",),
                                                                            ("u_lip", "l_lip", "mouth")))
        e = (e_left + e_right) / 2
        d, m = e_right - e_left, mouth - e
        half_side = max(2.0 * np.linalg.norm(d), 1.8 * np.linalg.norm(m))
        c = e + 0.1 * m
        assert abs(2 * half_side / size - 1) < 0.04, (seed, 2 * half_side / size)
        np.testing.assert_allclose(c / size, [0.5, 0.5], atol=0.02)


def test_every_solid_lies_inside_the_marching_sphere():
    gen = torch.Generator().manual_seed(1)
    xyz = (torch.rand(300_000, 3, generator=gen) * 2 - 1) * 1.6
    for seed in range(6):
        head = SyntheticHead(_decorated(seed, hat=True, hair_style=HAIR_STYLES[seed % len(HAIR_STYLES)]))
        lab = head.label(xyz)
        r = xyz.norm(dim=-1)
        assert r[lab > 0].max() <= CLIP_RADIUS + 1e-6 < 1.5
        # Only the torso reaches the clip ball; head, hair and hat stay well inside.
        head_classes = torch.isin(lab, torch.tensor([ID[n] for n in ("skin", "hair", "hat", "eye_g", "l_ear")]))
        assert r[head_classes].max() < 1.35


def test_label_logits_and_render_agree_on_hand_picked_points():
    params = _decorated(7, hair_style="bald", glasses=False, hat=False)
    head = SyntheticHead(params)
    size = 128
    K = portrait_intrinsics(size, "ortho")
    hr = head.raycast(FRONTAL_ORTHO, K, size, size, device="cpu")
    frontal, depth = hr.labels[0], hr.depth[0]
    # Centre pixel: the ray x = 0, y = 0.1 meets the nose tip (x = 0 belongs to l_nose) or the skin.
    assert frontal[64, 64] in (ID["l_nose"], ID["skin"])
    hit = np.array([0.0, 0.1, 4.5 - depth[64, 64]])
    assert head.label(hit[None] + [0, 0, 1e-3])[0] == 0
    assert head.label(hit[None] - [0, 0, 2e-4])[0] == frontal[64, 64]
    # The left eye's centre (0.5, 0) in face units projects to u = cx + x * f, v = cy - (y - 0.1) * f.
    al = alignment(params)
    ex, ey = al.scale * 0.5, al.scale * (0.0 - al.center[1]) + 0.1
    f = K[0, 0]
    u, v = round(64 + ex * f), round(64 - (ey - 0.1) * f)
    assert u > 64 and frontal[v, u] == ID["l_eye"]
    # logits: one-hot scores whose argmax is the label, on tensors; label also takes NumPy.
    pts = torch.tensor([[0.0, 0.1, 4.5 - float(depth[64, 64]) - 2e-4], [0.0, 0.0, 1.49], [0.9, -1.0, 0.0]])
    logits = head.logits(pts)
    assert logits.shape == (3, 20) and logits.dtype == torch.float32
    torch.testing.assert_close(logits.argmax(-1), head.label(pts))
    assert head.label(pts)[1] == 0 and head.label(pts)[2] == ID["cloth"]
    np.testing.assert_array_equal(head.label(pts.numpy()), head.label(pts).numpy())


def test_sampling_is_deterministic_by_seed():
    assert head_from_seed(4).params == head_from_seed(4).params
    assert head_from_seed(4).params != head_from_seed(5).params
    a = head_from_seed(4).render(FRONTAL_ORTHO, portrait_intrinsics(64, "ortho"), 64, 64, device="cpu")
    b = head_from_seed(4).render(FRONTAL_ORTHO, portrait_intrinsics(64, "ortho"), 64, 64, device="cpu")
    np.testing.assert_array_equal(a, b)


def test_params_json_round_trip_and_errors(tmp_path):
    params = sample_head(np.random.default_rng(9))
    assert HeadParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    bad = params.to_dict()
    bad["hair_style"] = "mohawk"
    with pytest.raises(ValueError, match="unknown hair style 'mohawk'; valid"):
        HeadParams.from_dict(bad)
    bad = params.to_dict()
    del bad["eye_radii"]
    bad["eye_size"] = 1.0
    with pytest.raises(ValueError, match=r"unknown keys \['eye_size'\], missing keys \['eye_radii'\]"):
        HeadParams.from_dict(bad)
    bad = params.to_dict()
    bad["skull_radii"] = [0.5, 0.6]
    with pytest.raises(ValueError, match="'skull_radii' must be a list of 3 numbers"):
        HeadParams.from_dict(bad)
    (tmp_path / "head.json").write_text('{"head_model": 2, "params": {"hair_style": "short"}}')
    with pytest.raises(DataError, match="head.json: head parameters: unknown keys"):
        load_head(tmp_path)
    (tmp_path / "head.json").write_text('{"params": {"head_radii": [0.5, 0.6, 0.5]}}')  # an older generator's
    with pytest.raises(DataError, match="head.json: written by head generator version 1, this toolkit builds "
                                        "version 2.*synth portraits"):
        load_head(tmp_path)
    with pytest.raises(DataError, match="file not found"):
        load_head(tmp_path / "nowhere")


@pytest.mark.parametrize("projection", ["ortho", "perspective"])
def test_write_portrait_dataset(tmp_path, projection):
    size, views = 48, 3
    root = write_portrait_dataset(tmp_path / "a", instances=2, views=views, size=size, projection=projection, seed=3)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["projection"] == projection and meta["image_size"] == size and meta["seed"] == 3
    assert meta["generator"] == "toolkit.synthetic.heads"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["00000", "00001"]
    from toolkit.sof import data as sof_data
    if hasattr(sof_data, "validate_dataset"):
        assert sof_data.validate_dataset(root) == []
    folder = root / "00001"
    for v in range(views):
        assert (folder / f"seg_{v:02d}.png").is_file() and (folder / f"seg_vis_{v:02d}.png").is_file()
    cams = load_npy(folder / "cam2world.npy")
    K = load_npy(folder / "intrinsic.npy")
    assert cams.shape == (views, 4, 4)
    np.testing.assert_allclose(K, portrait_intrinsics(size, projection))
    # View 00 is frontal: on +z, looking at (0, 0.1, 0) along -z.
    np.testing.assert_allclose(cams[0, :3, 3] * [1, 1, 0], [0, 0.1, 0], atol=1e-9)
    np.testing.assert_allclose(cams[0, :3, 2], [0, 0, -1], atol=1e-9)
    # head.json rebuilds the very field the label maps were rendered from.
    head = load_head(folder)
    assert head.params == sample_head(np.random.default_rng([3, 1]))
    for v in range(views):
        np.testing.assert_array_equal(read_label_png(folder / f"seg_{v:02d}.png", 20),
                                      head.render(cams[v], K, size, size, projection=projection, device="cpu"))
    # Deterministic given the seed: a second run writes identical files.
    again = write_portrait_dataset(tmp_path / "b", instances=2, views=views, size=size, projection=projection, seed=3)
    for name in ("seg_02.png", "cam2world.npy", "head.json"):
        assert (again / "00001" / name).read_bytes() == (folder / name).read_bytes()
