"""Command line: ``python -m toolkit <command> ...`` for headless use, scripts and checks.

Commands:
    synth portraits OUT     procedural semantic portraits in the SOF format
    synth bodies OUT        procedural moving bodies in the D-FAUST / Occupancy Flow format
    convert celebamask MASKS_DIR OUT   single-view CelebAMask-HQ masks -> SOF instances (default camera)
    occupancy SEQUENCE_DIR  derive occupancy labels (points_seq) from a real scan's pcl_seq
    validate PATH           check a dataset of either format; exit 1 listing every problem
    train sof|oflow --config FILE [--set key=value ...]
    eval sof|oflow CHECKPOINT DATA [--json OUT] [--split NAME] [--max-windows N] [--points N]
    fit sof CHECKPOINT MASKS_DIR OUT   fit single-view masks (codes, pose, alignment); scores and renders
    notebooks [--quick] [--only NAME] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _synth(args) -> int:
    if args.kind == "portraits":
        from toolkit.synthetic.heads import write_portrait_dataset

        root = write_portrait_dataset(args.out, instances=args.instances, views=args.views, size=args.size,
                                      projection=args.projection, seed=args.seed)
    else:
        from toolkit.synthetic.bodies import write_body_dataset

        root = write_body_dataset(args.out, sequences=args.sequences, frames=args.frames, seed=args.seed)
    print(f"wrote {root}")
    return 0


def _convert(args) -> int:
    from toolkit.sof.data import convert_celebamask

    written = convert_celebamask(args.masks_dir, args.out, size=args.size, projection=args.projection)
    print(f"wrote {len(written)} single-view instances to {args.out}")
    return 0


def _occupancy(args) -> int:
    from toolkit.oflow.occupancy import write_occupancy_from_scan

    out = write_occupancy_from_scan(args.sequence_dir)
    print(f"wrote {out}")
    return 0


def detect_format(path: Path) -> str:
    """'sof' for SOF instance folders, 'oflow' for D-FAUST-style sequence folders."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    markers_oflow = ("points_seq", "pcl_seq")
    if any(path.glob("**/points_seq")) or any(path.glob("**/pcl_seq")) or path.name in markers_oflow:
        return "oflow"
    return "sof"


def _validate(args) -> int:
    fmt = args.format or detect_format(args.path)
    if fmt == "sof":
        from toolkit.sof.data import validate_dataset
    else:
        from toolkit.oflow.data import validate_dataset
    problems = validate_dataset(args.path)
    if problems:
        print(f"{args.path}: {len(problems)} problem(s) ({fmt} format)")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"{args.path}: OK ({fmt} format)")
    return 0


def _train(args) -> int:
    if args.system == "sof":
        from toolkit.sof.train import train_from_config
    else:
        from toolkit.oflow.train import train_from_config
    train_from_config(args.config, overrides=args.set)
    return 0


def _eval(args) -> int:
    if args.system == "sof":
        from toolkit.sof.train import evaluate_checkpoint
    else:
        from toolkit.oflow.train import evaluate_checkpoint
    if args.system == "sof":
        if args.split or args.max_windows or args.points or args.field_iou or args.surface_points:
            raise SystemExit("eval sof: --split, --max-windows, --points, --field-iou and --surface-points apply "
                             "to oflow only (SOF scores the held-out views)")
        result = evaluate_checkpoint(args.checkpoint, args.data)
    else:
        result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split or "test",
                                     max_windows=args.max_windows, n_eval_points=args.points,
                                     field_iou=args.field_iou, n_surface_points=args.surface_points or 100_000)
    text = json.dumps(result, indent=2)
    if args.json:
        from toolkit.io import atomic_save_text

        atomic_save_text(args.json, text + "\n")
    print(text)
    return 0


def _fit(args) -> int:
    from toolkit.sof.fit import fit_masks

    report = fit_masks(args.checkpoint, args.masks_dir, args.out, config=args.config, overrides=args.set,
                       render_size=args.size, overwrite=args.overwrite)
    for stem, m in report["masks"].items():
        print(f"{stem}: foreground mIoU {m['miou_foreground']:.3f} on the fitted view")
    print(f"wrote {args.out}/fit.json ({report['seconds']:.0f} s)")
    return 0


def _notebooks(args) -> int:
    from toolkit.notebooks import run_notebooks

    run_notebooks(args.out, quick=args.quick, only=args.only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toolkit", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate synthetic datasets")
    ssub = s.add_subparsers(dest="kind", required=True)
    sp = ssub.add_parser("portraits", help="procedural semantic portraits (SOF format)")
    sp.add_argument("out", type=Path)
    sp.add_argument("--instances", type=int, default=8)
    sp.add_argument("--views", type=int, default=12)
    sp.add_argument("--size", type=int, default=128)
    sp.add_argument("--projection", choices=["ortho", "perspective"], default="ortho")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=_synth)
    sb = ssub.add_parser("bodies", help="procedural moving bodies (D-FAUST format)")
    sb.add_argument("out", type=Path)
    sb.add_argument("--sequences", type=int, default=12)
    sb.add_argument("--frames", type=int, default=17)
    sb.add_argument("--seed", type=int, default=0)
    sb.set_defaults(func=_synth)

    c = sub.add_parser("convert", help="convert external data")
    csub = c.add_subparsers(dest="kind", required=True)
    cc = csub.add_parser("celebamask", help="CelebAMask-HQ masks -> SOF single-view instances")
    cc.add_argument("masks_dir", type=Path)
    cc.add_argument("out", type=Path)
    cc.add_argument("--size", type=int, default=128, help="stored label-map size (nearest resampling)")
    cc.add_argument("--projection", choices=["ortho", "perspective"], default="ortho",
                    help="camera model of the default frontal camera")
    cc.set_defaults(func=_convert)

    o = sub.add_parser("occupancy", help="derive occupancy labels (points_seq) from a scan's pcl_seq")
    o.add_argument("sequence_dir", type=Path)
    o.set_defaults(func=_occupancy)

    v = sub.add_parser("validate", help="check a dataset; exit 1 listing every problem")
    v.add_argument("path", type=Path)
    v.add_argument("--format", choices=["sof", "oflow"], default=None, help="default: detected")
    v.set_defaults(func=_validate)

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("system", choices=["sof", "oflow"])
    t.add_argument("--config", required=True, help="YAML file, or the name of a packaged preset")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a dataset")
    e.add_argument("system", choices=["sof", "oflow"])
    e.add_argument("checkpoint", type=Path)
    e.add_argument("data", type=Path)
    e.add_argument("--json", type=Path, default=None)
    e.add_argument("--split", default=None, help="oflow: split list to score (default test; e.g. test_new_individual)")
    e.add_argument("--max-windows", type=int, default=None, help="oflow: score this many evenly spaced windows")
    e.add_argument("--points", type=int, default=None,
                   help="oflow: IoU points per frame, the first N of each file (default all, the original's 100k)")
    e.add_argument("--field-iou", action="store_true",
                   help="oflow: also score IoU on the field (every point transported to t=0; minutes per window on a "
                        "CPU); the default IoU tests the points against the propagated mesh, as the original")
    e.add_argument("--surface-points", type=int, default=None,
                   help="oflow: points sampled on each predicted mesh for Chamfer (default 100000, the original's)")
    e.set_defaults(func=_eval)

    f = sub.add_parser("fit", help="fit single-view masks into a trained model (SOF stage 2)")
    f.add_argument("system", choices=["sof"])
    f.add_argument("checkpoint", type=Path, help="a stage-1 SOF checkpoint, e.g. data/sof_synthetic.pt")
    f.add_argument("masks_dir", type=Path, help="CelebAMask-HQ label PNGs, or a SOF dataset of single views")
    f.add_argument("out", type=Path, help="output folder: fit.json, fit.pt, codes.npz, renders/")
    f.add_argument("--config", default="fit_masks", help="stage-2 config, packaged name or YAML (default fit_masks)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    f.add_argument("--size", type=int, default=128, help="resolution of scores and renders (default 128)")
    f.add_argument("--overwrite", action="store_true", help="replace an earlier fit in OUT")
    f.set_defaults(func=_fit)

    n = sub.add_parser("notebooks", help="execute the notebooks headless")
    n.add_argument("--quick", action="store_true", help="QUICK=True: tiny sizes (CI, CPU laptop)")
    n.add_argument("--only", default=None, help="one notebook by name or number")
    n.add_argument("--out", type=Path, default=Path("outputs/notebooks"))
    n.set_defaults(func=_notebooks)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from toolkit.io import DataError

    try:
        return args.func(args)
    except (DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
