"""Command line of the toolkit: python -m toolkit <command> ... for headless use, scripts and checks.

Commands:
    synth portraits OUT     procedural semantic portraits in the SOF format
    synth bodies OUT        procedural moving bodies in the D-FAUST / Occupancy Flow format
    convert celebamask MASKS_DIR OUT   single-view CelebAMask-HQ masks -> SOF instances (default camera)
    occupancy SEQUENCE_DIR  derive occupancy labels (points_seq) from a real scan's pcl_seq
    validate PATH           check a dataset of either format; exit 1 listing every problem
    train sof|oflow --config NAME|FILE [--set key=value ...]
    eval sof|oflow|oflow-latent CHECKPOINT DATA [--json OUT] [options]
    fit sof CHECKPOINT MASKS_DIR OUT   fit single-view masks (codes, pose, alignment); scores and renders
    notebooks [--quick] [--full] [--only NAME] [--out DIR] [--jobs N]

Errors: one line on stderr, no traceback (``--debug`` shows it). Exit status 2 for usage errors (bad
flags, bad ``--set`` or config values, unknown presets or notebooks), 1 for bad data and failed reads or
writes, 130 when interrupted (training saves a checkpoint first and says where). Outputs are never
overwritten without ``--overwrite``; datasets and ``points_seq`` appear whole or not at all.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path


def _synth(args) -> int:
    if args.kind == "portraits":
        from toolkit.synthetic.heads import write_portrait_dataset

        root = write_portrait_dataset(args.out, instances=args.instances, views=args.views, size=args.size,
                                      projection=args.projection, seed=args.seed, overwrite=args.overwrite)
    else:
        from toolkit.synthetic.bodies import write_body_dataset

        root = write_body_dataset(args.out, sequences=args.sequences, frames=args.frames, seed=args.seed,
                                  overwrite=args.overwrite)
    print(f"wrote {root}")
    return 0


def _convert(args) -> int:
    from toolkit.sof.data import convert_celebamask

    written = convert_celebamask(args.masks_dir, args.out, size=args.size, projection=args.projection)
    print(f"wrote {len(written)} single-view instances to {args.out}")
    return 0


def _occupancy(args) -> int:
    from toolkit.oflow.occupancy import write_occupancy_from_scan

    out = write_occupancy_from_scan(args.sequence_dir, overwrite=args.overwrite)
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


def _system(name: str):
    """The run-lifecycle record of a system, ``toolkit.<name>.train.SYSTEM`` (:class:`toolkit.training.lifecycle.System`):
    the one place the command line tells the systems apart."""
    import importlib

    return importlib.import_module(f"toolkit.{name}.train").SYSTEM


def _options(args, system: str, flags: dict[str, tuple[str, str, object]], command: str) -> dict:
    """Keyword options of ``system`` from its flags ({flag: (owning system, keyword, default)}); a flag given for
    another system is a usage error."""
    wrong = [flag for flag, (owner, kw, _) in flags.items() if getattr(args, kw) and owner != system]
    if wrong:
        owners = sorted({flags[f][0] for f in wrong})
        raise UsageError(f"{command} {system}: {', '.join(wrong)} apply to {' and '.join(owners)} only")
    return {kw: (getattr(args, kw) or default) for flag, (owner, kw, default) in flags.items() if owner == system}


def _validate(args) -> int:
    fmt = args.format or detect_format(args.path)
    try:
        options = _options(args, fmt, _VALIDATE_FLAGS, "validate")
    except UsageError:
        raise UsageError("validate: --window applies to the oflow format (sequence windows) only") from None
    problems = _system(fmt).validate(args.path, **options)
    if problems:
        print(_printable(f"{args.path}: {len(problems)} problem(s) ({fmt} format)"))
        for p in problems:
            print(_printable(f"  {p}"))
        return 1
    print(_printable(f"{args.path}: OK ({fmt} format)"))
    return 0


def _train(args) -> int:
    from toolkit.training.lifecycle import train_from_config

    train_from_config(_system(args.system), args.config, overrides=args.set)
    return 0


_VALIDATE_FLAGS = {"--window": ("oflow", "window", None)}
_EVAL_FLAGS = {"--split": ("oflow", "split", "test"), "--max-windows": ("oflow", "max_windows", None),
               "--points": ("oflow", "points", None), "--field-iou": ("oflow", "field_iou", False),
               "--surface-points": ("oflow", "surface_points", 100_000),
               "--real": ("oflow-latent", "real", None), "--pairs": ("oflow-latent", "pairs", 12)}
"""{flag: (the system it applies to, its argparse name, its default)}."""
_EVAL_KEYWORDS = {"points": "n_eval_points", "surface_points": "n_surface_points", "pairs": "max_pairs"}
"""argparse names that the evaluators call otherwise."""


def _eval(args) -> int:
    options = _options(args, args.system, _EVAL_FLAGS, "eval")
    options = {_EVAL_KEYWORDS.get(k, k): v for k, v in options.items()}
    if args.json:
        _check_json_target(args.json, args.overwrite)  # before the (long) evaluation
    if args.system == "oflow-latent":  # the motion codes of a generative model: not a system of its own
        from toolkit.oflow.latent_eval import evaluate_latent

        result = evaluate_latent(args.checkpoint, args.data, **options)
    else:
        result = _system(args.system).evaluate(args.checkpoint, args.data, **options)
    text = json.dumps(result, indent=2)
    print(text, flush=True)  # the result is shown even if the JSON file cannot be written
    if args.json:
        from toolkit.io import atomic_save_text

        atomic_save_text(args.json, text + "\n")
    return 0


def _check_json_target(path: Path, overwrite: bool) -> None:
    from toolkit.io import DataError

    if path.is_dir():
        raise DataError(path, "is a folder; --json needs a file name")
    if path.exists() and not overwrite:
        raise DataError(path, "exists; pass --overwrite to replace it")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(folder, "folder for --json not found")
    if not os.access(folder, os.W_OK):
        raise DataError(folder, "folder for --json is not writable")


def _fit(args) -> int:
    from toolkit.sof.fit import fit_masks

    report = fit_masks(args.checkpoint, args.masks_dir, args.out, config=args.config, overrides=args.set,
                       render_size=args.size, overwrite=args.overwrite)
    for stem, m in report["masks"].items():
        print(f"{stem}: foreground mIoU {m['miou_foreground']:.3f} on the fitted view")
    print(f"wrote {args.out}/fit.json ({report['seconds']:.0f} s)")
    return 0


def _notebooks(args) -> int:
    from toolkit.notebooks import find_notebook, run_notebooks

    if args.only is not None:
        try:
            find_notebook(args.only)
        except ValueError as exc:
            raise UsageError(f"notebooks --only: {exc}") from None
    begin = time.perf_counter()
    runs = run_notebooks(args.out, quick=args.quick, full=args.full, only=args.only, jobs=args.jobs)
    failed = [r for r in runs if r.error]
    total = time.perf_counter() - begin
    print(f"{len(runs) - len(failed)}/{len(runs)} notebooks ran in {total / 60:.1f} min"
          + "".join(f"\nFAILED {r.notebook.name}: {r.error}" for r in failed), flush=True)
    return 1 if failed else 0


class UsageError(ValueError):
    """A command used the wrong way (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line (``prog: error: ...``) and exit status 2, and defaults in the help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help with each option's default, where it has a meaningful one the help text does not state."""

    def _get_help_string(self, action):
        text = action.help or ""
        trivial = action.default is None or action.default is False or action.default == [] \
            or action.default is argparse.SUPPRESS
        if not trivial and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _count(minimum: int):
    """argparse type: an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not allowed: expected an integer >= {minimum}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


_POSITIVE, _NON_NEGATIVE = _count(1), _count(0)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m toolkit", description=__doc__.split("\n\n")[0])
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("synth", help="generate synthetic datasets")
    ssub = s.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    sp = ssub.add_parser("portraits", help="procedural semantic portraits (SOF format)")
    sp.add_argument("out", type=Path, help="dataset folder to write")
    sp.add_argument("--instances", type=_POSITIVE, default=8, help="portraits (one latent code each)")
    sp.add_argument("--views", type=_POSITIVE, default=12, help="views per portrait; view 00 is the frontal aligned crop")
    sp.add_argument("--size", type=_POSITIVE, default=128, help="label-map side in pixels")
    sp.add_argument("--projection", choices=["ortho", "perspective"], default="ortho", help="camera model")
    sp.add_argument("--seed", type=_NON_NEGATIVE, default=0, help="instance i is drawn from the generator seeded (seed, i)")
    sp.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic dataset in OUT")
    sp.set_defaults(func=_synth)
    sb = ssub.add_parser("bodies", help="procedural moving bodies (D-FAUST format)")
    sb.add_argument("out", type=Path, help="dataset root to write (<out>/synthetic/<sequence>/...)")
    sb.add_argument("--sequences", type=_POSITIVE, default=12,
                    help="identity x motion sequences, split like D-FAUST (train, val, test, new individual, new motion)")
    sb.add_argument("--frames", type=_POSITIVE, default=17, help="frames per sequence (60 fps)")
    sb.add_argument("--seed", type=_NON_NEGATIVE, default=0, help="seed of identities, motions and point draws")
    sb.add_argument("--overwrite", action="store_true", help="replace an earlier synthetic dataset in OUT")
    sb.set_defaults(func=_synth)

    c = sub.add_parser("convert", help="convert external data")
    csub = c.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    cc = csub.add_parser("celebamask", help="CelebAMask-HQ masks -> SOF single-view instances")
    cc.add_argument("masks_dir", type=Path, help="folder of CelebAMask-HQ label PNGs (mode L, ids 0..18)")
    cc.add_argument("out", type=Path, help="SOF dataset folder to write")
    cc.add_argument("--size", type=_POSITIVE, default=128, help="stored label-map size (nearest resampling)")
    cc.add_argument("--projection", choices=["ortho", "perspective"], default="ortho",
                    help="camera model of the default frontal camera")
    cc.set_defaults(func=_convert)

    o = sub.add_parser("occupancy", help="derive occupancy labels (points_seq) from a scan's pcl_seq")
    o.add_argument("sequence_dir", type=Path, help="a sequence folder holding pcl_seq/")
    o.add_argument("--overwrite", action="store_true", help="replace points_seq derived by an earlier run")
    o.set_defaults(func=_occupancy)

    v = sub.add_parser("validate", help="check a dataset; exit 1 listing every problem")
    v.add_argument("path", type=Path, help="a dataset root, an instance or sequence folder, or one file")
    v.add_argument("--format", choices=["sof", "oflow"], default=None, help="default: detected")
    v.add_argument("--window", type=_count(2), default=None, metavar="L",
                   help="oflow: also report sequences shorter than an L-frame window (training skips them)")
    v.set_defaults(func=_validate)

    from toolkit.config import packaged_configs

    presets = "; ".join(f"{system}: {', '.join(packaged_configs(system))}" for system in ("sof", "oflow"))
    t = sub.add_parser("train", help="train a model from a YAML config",
                       description=f"Train a model from a YAML config. Packaged presets (toolkit/configs/) - {presets}. "
                                   "A run resumes from its out_dir's latest checkpoint.")
    t.add_argument("system", choices=["sof", "oflow"], help="which model")
    t.add_argument("--config", required=True, help="YAML file, or the name of a packaged preset (listed above)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    t.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a dataset")
    e.add_argument("system", choices=["sof", "oflow", "oflow-latent"],
                   help="sof: held-out views; oflow: 4D reconstruction metrics; oflow-latent: a generative "
                        "model's motion codes (retrieval, transfer; DATA: synthetic bodies)")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("data", type=Path)
    e.add_argument("--json", type=Path, default=None, help="also write the result to this file (printed first)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    e.add_argument("--split", default=None, help="oflow: split list to score (default test; e.g. test_new_individual)")
    e.add_argument("--max-windows", type=_POSITIVE, default=None, help="oflow: score this many evenly spaced windows")
    e.add_argument("--points", type=_POSITIVE, default=None,
                   help="oflow: IoU points per frame, the first N of each file (default all, the original's 100k)")
    e.add_argument("--field-iou", action="store_true",
                   help="oflow: also score IoU on the field (every point transported to t=0; minutes per window on a "
                        "CPU); the default IoU tests the points against the propagated mesh, as the original")
    e.add_argument("--surface-points", type=_POSITIVE, default=None,
                   help="oflow: points sampled on each predicted mesh for Chamfer (default 100000, the original's)")
    e.add_argument("--real", type=Path, default=None,
                   help="oflow-latent: a real sequence folder (pcl_seq): its own motion code against standing still")
    e.add_argument("--pairs", type=_POSITIVE, default=None, help="oflow-latent: transfer pairs scored (default 12)")
    e.set_defaults(func=_eval)

    f = sub.add_parser("fit", help="fit single-view masks into a trained model (SOF stage 2)")
    f.add_argument("system", choices=["sof"])
    f.add_argument("checkpoint", type=Path, help="a stage-1 SOF checkpoint, e.g. data/sof_synthetic.pt")
    f.add_argument("masks_dir", type=Path, help="CelebAMask-HQ label PNGs, or a SOF dataset of single views")
    f.add_argument("out", type=Path, help="output folder: fit.json, fit.pt, codes.npz, renders/")
    f.add_argument("--config", default="fit_masks", help="stage-2 config, packaged name or YAML (default fit_masks)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config entry")
    f.add_argument("--size", type=_POSITIVE, default=128, help="resolution of scores and renders (default 128)")
    f.add_argument("--overwrite", action="store_true", help="replace an earlier fit in OUT")
    f.set_defaults(func=_fit)

    n = sub.add_parser("notebooks", help="execute the notebooks headless")
    n.add_argument("--quick", action="store_true", help="QUICK=True: tiny sizes (CI, CPU laptop)")
    n.add_argument("--full", action="store_true",
                   help="FULL=True: training notebooks retrain their full schedules (hours on a CPU) instead of "
                        "starting from the shipped checkpoints")
    n.add_argument("--only", default=None, help="one notebook by name or number")
    n.add_argument("--out", type=Path, default=Path("outputs/notebooks"), help="folder of the executed notebooks")
    n.add_argument("--jobs", type=_POSITIVE, default=None,
                   help="lanes run side by side (SOF 01-07, Occupancy Flow 08-12); default: as many as CPUs and lanes allow")
    n.set_defaults(func=_notebooks)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (errors are printed as one line, see the module docstring)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.filterwarnings("default", category=UserWarning)  # e.g. sequences skipped: say so every run
        try:
            return args.func(args)
        except BaseException as exc:  # every error ends as one line and an exit status
            if args.debug or isinstance(exc, SystemExit):
                raise
            code, message = _describe(exc)
            print(_printable(message), file=sys.stderr)
            return code


def _describe(exc: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) of an error that ended a command."""
    from toolkit.config import ConfigError
    from toolkit.io import DataError

    if isinstance(exc, KeyboardInterrupt):
        return 130, str(exc) if str(exc) else "interrupted"
    if isinstance(exc, (ConfigError, UsageError)):
        return 2, f"error: {exc}"
    if isinstance(exc, DataError):
        return 1, f"error: {exc}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return 1, f"error: {where}{exc.strerror or exc}"
    if isinstance(exc, ValueError):  # a value the command cannot use (arguments, config relations)
        return 2, f"error: {exc}"
    text = str(exc).strip().splitlines()
    return 1, (f"internal error: {type(exc).__name__}: {text[0] if text else ''} "
               "(run with --debug for the traceback, and please report it)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(_printable(f"warning: {message}"), file=sys.stderr)


def _printable(text: str) -> str:
    """``text`` with undecodable file-name bytes (lone surrogates) shown as ``\\xNN``, so printing never fails."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


if __name__ == "__main__":
    raise SystemExit(main())
