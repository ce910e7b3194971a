"""The `colortrack` command line: parses arguments and calls the library, nothing more.

Errors a user can fix print one line, `colortrack: error: <message>`, and exit 1 (bad data) or
2 (wrong usage); `--debug` shows the traceback instead. Ctrl-C (exit 130) and SIGTERM (143) stop
a command cleanly: the library removes what the run had half-written.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from colortrack import __version__
from colortrack.config import (
    DEFAULT_METHOD,
    METHODS,
    PRESETS,
    ModelConfig,
    PropagationConfig,
    TrainConfig,
    settings_help,
)
from colortrack.errors import ColortrackError, Terminated, UsageError
from colortrack.validate import printable

log = logging.getLogger("colortrack")


def _sequences(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _propagation(pairs: list[str] | None) -> Any:
    if not pairs:
        return None
    from colortrack.config import PropagationConfig, override

    return override(PropagationConfig(), pairs)


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        from colortrack.data.files import atomic_write_bytes

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
        log.info("wrote %s", path)


def _propagator(args: argparse.Namespace) -> Any:
    """The method's propagator, loaded with the cyclic garbage collector paused: PyTorch's
    import makes some 250,000 objects that it would scan again and again (0.2 s of a command's
    start-up). They are then frozen, so that later collections skip them."""
    gc.disable()
    try:
        from colortrack.track.tracking import make_propagator

        return make_propagator(
            args.method, model=args.model, propagation=_propagation(args.set), device=args.device
        )
    finally:
        gc.freeze()
        gc.enable()


def cmd_track(args: argparse.Namespace) -> int:
    propagator = _propagator(args)
    from colortrack.track.tracking import Tracker, track_points_to_dir, track_to_dir

    tracker = Tracker(propagator)
    options = {"overwrite": args.overwrite, "progress": not args.quiet,
               "formats": args.format or ["davis"]}
    if args.mask is not None:
        summary = track_to_dir(tracker, args.video, args.mask, args.out, **options)
    else:
        summary = track_points_to_dir(tracker, args.video, args.points, args.out, **options)
    rate = summary.frames / max(summary.seconds, 1e-9)
    print(f"tracked {summary.frames} frames into {summary.out_dir} ({rate:.1f} frames/s)")
    return 0


def cmd_track_many(args: argparse.Namespace) -> int:
    from colortrack.track.batch import BatchSettings, parse_shard, track_many

    settings = BatchSettings(args.method, args.model, tuple(args.set or ()), args.device,
                             tuple(args.format or ["davis"]))
    report = track_many(args.manifest, args.out, settings, workers=args.workers,
                        shard=parse_shard(args.shard), overwrite=args.overwrite,
                        progress=not args.quiet, summary=args.json)
    print(report.format_table())
    return min(report.failed, 100)


def cmd_eval_davis(args: argparse.Namespace) -> int:
    from colortrack.data.davis import evaluate_davis

    report = evaluate_davis(args.root, args.predictions, sequences=_sequences(args.sequences))
    print(report.format_table())
    _write_json(args.json, report.to_json())
    return 0


def cmd_bench_davis(args: argparse.Namespace) -> int:
    from colortrack.eval.benchmarks import bench_davis, davis_frame_counts, format_timing

    if args.corrections < 0:
        raise UsageError(f"--corrections {args.corrections}: give 0 or more")
    propagator = _propagator(args)
    report, seconds = bench_davis(
        args.root,
        args.out,
        propagator,
        sequences=_sequences(args.sequences),
        overwrite=args.overwrite,
        progress=not args.quiet,
        annotated=tuple(_sequences(args.annotated_frames) or ["0"]),
    )
    frames = davis_frame_counts(args.root, list(seconds))
    print(report.format_table())
    print(format_timing(seconds, frames))
    data = report.to_json() | {"method": args.method, "seconds": seconds, "frames": frames}
    if args.corrections:
        from colortrack.eval.corrections import bench_corrections, format_curves

        data |= bench_corrections(args.root, propagator, args.corrections,
                                  sequences=_sequences(args.sequences), progress=not args.quiet)
        print(format_curves({"confidence": data["corrections"],
                             "oracle": data["corrections_oracle"]}))
    _write_json(args.json, data)
    return 0


def cmd_bench_badja(args: argparse.Namespace) -> int:
    from colortrack.eval.benchmarks import bench_badja, format_pck

    results = bench_badja(
        args.root,
        args.davis_root,
        args.out,
        _propagator(args),
        sequences=_sequences(args.sequences),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(format_pck(results))
    _write_json(args.json, results | {"method": args.method})
    return 0


def cmd_bench_jhmdb(args: argparse.Namespace) -> int:
    from colortrack.data.jhmdb import read_split
    from colortrack.eval.benchmarks import bench_jhmdb, format_pck

    results = bench_jhmdb(
        args.root,
        args.out,
        _propagator(args),
        clips=read_split(args.split) if args.split else _sequences(args.clips),
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(format_pck(results, rows="clips", total="All frames"))
    _write_json(args.json, results | {"method": args.method})
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from colortrack.training.train import run

    summary = run(
        args.videos,
        preset=args.preset,
        out=args.out,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        resume=args.resume,
        overwrite=args.overwrite,
        overrides=args.set or [],
        device=args.device,
        progress=not args.quiet,
    )
    print(summary.text())
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from colortrack.model.checkpoint import describe
    from colortrack.model.device import arithmetic_report, torch_device

    arithmetic = arithmetic_report(args.precision, torch_device(args.device))
    print(describe(preset=args.preset, model_path=args.model))
    print(arithmetic)
    return 0


def _video_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"model": args.model, "device": args.device, "overwrite": args.overwrite,
            "progress": not args.quiet}  # fmt: skip


def cmd_colorize(args: argparse.Namespace) -> int:
    from colortrack.track.colorize import colorize_video

    colorize_video(args.video, args.reference, args.out, **_video_options(args))
    print(f"wrote {args.out}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from colortrack.track.colorize import embed_video

    embed_video(args.video, args.out, **_video_options(args))
    print(f"wrote {args.out}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from colortrack.eval.analysis import analyze

    print(analyze(args.root, [args.predictions, *(args.compare or [])], args.out,
                  model=args.model, colorize=not args.no_colorize, overwrite=args.overwrite,
                  keypoints=args.keypoints, badja_root=args.badja_root, progress=not args.quiet))
    print(f"wrote {Path(args.out) / 'report.html'}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from colortrack.app import serve

    serve(_propagator(args), args.video, host=args.host, port=args.port,
          max_upload_mb=args.max_upload_mb)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from colortrack.demo import run_demo

    print(run_demo(args.out, overwrite=args.overwrite, progress=not args.quiet, model=args.model))
    return 0


def _common(main: bool) -> argparse.ArgumentParser:
    """--debug/--quiet accepted before or after the command (SUPPRESS keeps the main value)."""
    parser = argparse.ArgumentParser(add_help=False)
    default = False if main else argparse.SUPPRESS
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and debug logs"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="no progress bars or info"
    )
    return parser


Command = Callable[[argparse.Namespace], int]


def _add(sub: Any, name: str, func: Command | None, text: str,
         settings: str | None = None) -> argparse.ArgumentParser:
    """A subcommand; `settings` (see config.settings_help) lists its --set keys under --help."""
    parser = sub.add_parser(name, parents=[_common(False)], help=text, description=text,
                            epilog=settings, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _tracking_settings() -> str:
    return settings_help("--set KEY=VALUE, tracking settings (KEY=default)", PropagationConfig)


def _add_method(parser: argparse.ArgumentParser, writes: bool = True) -> None:
    """--method and its settings; `writes`: the command writes outputs (--overwrite)."""
    parser.add_argument(
        "--method", choices=METHODS, default=DEFAULT_METHOD,
        help=f"propagator (default: {DEFAULT_METHOD}, the best measured; 'model' is the learned "
        "embedding alone)",
    )
    parser.add_argument("--model", help="checkpoint for --method model or model+pixels "
                        "(default: the shipped one)")
    parser.add_argument(
        "--set", action="append", metavar="KEY=VALUE",
        help="tracking setting, e.g. topk=5 (repeatable; keys listed below)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    if writes:
        parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs")


def _add_app(sub: Any) -> None:
    p = _add(sub, "app", cmd_app, "annotate, track, correct and export in a local web page",
             _tracking_settings())
    p.add_argument("video", nargs="?", help="video file or folder of frames to open")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1, this "
                   "machine only; any other warns, and the token is still needed)")
    p.add_argument("--max-upload-mb", type=float, default=512, metavar="MB",
                   help="largest video the page may upload (default: 512)")
    _add_method(p, writes=False)  # the page asks before it replaces an export


def _add_tracking(sub: Any) -> None:
    p = _add(sub, "track", cmd_track, "propagate a first-frame mask or keypoints through a video",
             _tracking_settings())
    p.add_argument("video", help="video file or folder of frames")
    first = p.add_mutually_exclusive_group(required=True)
    first.add_argument("--mask", help="first-frame mask (palette or 0/255 PNG), or a folder of "
                       "masks named by frame index (00000.png, 00042.png, ...): each later one "
                       "replaces that frame's prediction and is tracked on")
    first.add_argument("--points", help="first-frame keypoints (JSON)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_format(p)
    _add_method(p)

    p = _add(sub, "track-many", cmd_track_many, "track every video of a manifest (resumable; "
             "in parallel processes or shares of it); exit status: how many failed (at most "
             "100)", _tracking_settings())
    p.add_argument("manifest", help="JSON Lines (.jsonl) or CSV: video, annotation, optional "
                   "name and set per line (docs/usage.md)")
    p.add_argument("--out", required=True, metavar="DIR", help="results go to DIR/NAME/")
    p.add_argument("--workers", type=int, default=1, help="processes on this machine "
                   "(default: 1; they share the torch threads)")
    p.add_argument("--shard", default="0/1", metavar="I/N", help="track share I of N (0-based; "
                   "job arrays), split again among torchrun's ranks")
    p.add_argument("--json", metavar="FILE", help="also write the summary as JSON ({share} in "
                   "the name becomes the share's number)")
    _add_format(p)
    _add_method(p)


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", action="append", choices=("davis", "coco", "youtube-vis"),
                        default=None, help="results besides the PNGs (repeatable): coco "
                        "(coco.json; points.coco.json for points), youtube-vis (youtube-vis.json)")


def _add_davis_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", required=True, help="DAVIS root (JPEGImages/, Annotations/)")
    parser.add_argument("--sequences", metavar="A,B", help="only these sequences")
    parser.add_argument("--json", metavar="FILE", help="also write the scores as JSON")


def _add_benchmarks(sub: Any) -> None:
    evals = _add(sub, "eval", None, "score predictions").add_subparsers(
        dest="benchmark", metavar="BENCHMARK", required=True
    )
    p = _add(evals, "davis", cmd_eval_davis, "DAVIS J&F of a folder of predicted masks")
    p.add_argument("--predictions", required=True, metavar="DIR", help="DIR/<seq>/<frame>.png")
    _add_davis_options(p)

    benches = _add(sub, "bench", None, "track and score a benchmark").add_subparsers(
        dest="benchmark", metavar="BENCHMARK", required=True
    )
    p = _add(sub, "analyze", cmd_analyze, "where and why tracking fails: an HTML report")
    p.add_argument("predictions", help="a `bench davis --out` folder (<seq>/<frame>.png)")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="other methods' predictions")
    p.add_argument("--root", required=True, help="DAVIS root (JPEGImages/, Annotations/, "
                   "db_info.yml for attributes)")
    p.add_argument("--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--model", help="model whose colorization is compared with tracking "
                   "(default: the shipped one)")
    p.add_argument("--no-colorize", action="store_true", help="skip the colorization pass")
    p.add_argument("--keypoints", metavar="DIR", help="`bench badja --out` tracks: PCK against "
                   "the distance from the annotated frame")
    p.add_argument("--badja-root", metavar="DIR", help="BADJA folder, with --keypoints")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier report")

    p = _add(benches, "davis", cmd_bench_davis, "track every DAVIS sequence, then score J&F",
             _tracking_settings())
    p.add_argument("--out", required=True, metavar="DIR", help="where predictions go")
    p.add_argument("--annotated-frames", metavar="0,mid", help="frames given their true masks "
                   "besides frame 0: indices, mid, last (a user's corrections)")
    p.add_argument("--corrections", type=int, default=0, metavar="K",
                   help="then simulate a user who gives K true masks one at a time, each on the "
                   "frame the tracker is least sure of (and an oracle: the worst frame by J); "
                   "prints J&F after 0..K corrections (default: 0, none)")
    _add_davis_options(p)
    _add_method(p)

    p = _add(benches, "badja", cmd_bench_badja, "track BADJA joints on DAVIS frames, score PCK",
             _tracking_settings())
    p.add_argument("--root", required=True, help="BADJA folder (joint_annotations/)")
    p.add_argument("--davis-root", required=True, help="DAVIS root with the 480p frames")
    p.add_argument("--out", required=True, metavar="DIR", help="where tracks go")
    p.add_argument("--sequences", metavar="A,B", help="only these sequences")
    p.add_argument("--json", required=True, metavar="FILE", help="write the scores as JSON")
    _add_method(p)

    p = _add(benches, "jhmdb", cmd_bench_jhmdb, "track JHMDB joints from frame 0, score PCK",
             _tracking_settings())
    p.add_argument("--root", required=True, help="JHMDB folder (searched for joint_positions.mat)")
    p.add_argument("--out", required=True, metavar="DIR", help="where tracks go")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--clips", metavar="A,B", help="only these clips")
    which.add_argument(
        "--split",
        metavar="FILE",
        help="only the clips of a UVC/CRW-style test list: one clip per line, named by the last "
        "folder of the line's first path (.../<action>/<clip> or .../<clip>/joint_positions.mat)",
    )
    p.add_argument("--json", required=True, metavar="FILE", help="write the scores as JSON")
    _add_method(p)


def _add_model_commands(sub: Any) -> None:
    settings = settings_help("--set KEY=VALUE, model and training settings (KEY=the cpu "
                             "preset's value; model keys for new runs only)", ModelConfig,
                             TrainConfig)
    p = _add(sub, "train", cmd_train, "learn an embedding by colorizing unlabeled videos",
             settings)
    p.add_argument("videos", nargs="+", help="video files or folders of videos")
    p.add_argument("--preset", help=f"model and recipe preset: {', '.join(PRESETS)} (default: "
                   "cpu, or the resumed run's)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder")
    p.add_argument("--steps", type=int, help="training steps (default: the preset's)")
    p.add_argument("--batch", type=int, help="batch size (default: the preset's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="replace the run in RUN_DIR (its "
                   "files go once the new run's settings and videos are checked)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model or training setting (repeatable; keys listed below)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p = _add(sub, "info", cmd_info, "describe a preset or a trained model, and the arithmetic "
             "this machine tracks in")
    p.add_argument("--precision", default="auto",
                   help="tracking's precision to explain: auto, fp32, bf16 or int8")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--preset", help=f"preset: {', '.join(PRESETS)}")
    which.add_argument("--model", help="checkpoint path")
    p = _add(sub, "colorize", cmd_colorize, "colorize a video from one color reference frame")
    p.add_argument("--reference", required=True, help="color image of the first frame")
    q = _add(sub, "embed", cmd_embed, "show a video's learned embedding as colors")
    for parser in (p, q):
        parser.add_argument("video", help="video file or folder of frames")
        parser.add_argument("--out", required=True, help="output MP4")
        parser.add_argument("--model", help="checkpoint (default: the shipped one)")
        parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p = _add(sub, "demo", cmd_demo, "track the bundled demo clip")
    p.add_argument("--out", default="colortrack-demo", metavar="DIR", help="output folder")
    p.add_argument("--model", help="checkpoint to show instead of the shipped model")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's outputs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colortrack",
        parents=[_common(True)],
        description="Track objects and points in video with an embedding learned by colorizing.",
    )
    parser.add_argument("--version", action="version", version=f"colortrack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_tracking(sub)
    _add_app(sub)
    _add_benchmarks(sub)
    _add_model_commands(sub)
    return parser


# Arguments naming files a command reads, and those naming what it writes.
_INPUTS = ("video", "mask", "points", "model", "reference", "root", "davis_root", "predictions",
           "split", "keypoints", "badja_root", "manifest")
_INPUT_LISTS = ("videos", "compare")
_FILE_OUTPUTS = ("colorize", "embed")  # commands whose --out is a file, not a folder


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that would write into or over an input."""
    from colortrack.validate import check_paths

    inputs = [getattr(args, name, None) for name in _INPUTS]
    inputs += [path for name in _INPUT_LISTS for path in getattr(args, name, None) or ()]
    out, json_file = getattr(args, "out", None), getattr(args, "json", None)
    if args.command in _FILE_OUTPUTS:
        check_paths(inputs, files=[out, json_file])
    else:
        check_paths(inputs, folders=[out], files=[json_file])


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _message(error: Exception) -> str:
    """One line naming the file: OS errors become '<file>: <reason>' without the errno."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error)


def run() -> NoReturn:
    """`colortrack` as a command: `main`, then an exit that skips tearing the interpreter down,
    as freeing PyTorch's modules one object at a time is a noticeable part of a short command
    (docs/performance.md). What a normal exit does first is still done: the atexit handlers
    (logging, multiprocessing, temporary files) run and the standard streams are flushed.
    """
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a closed pipe, as a normal exit would ignore
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    for stream in (sys.stdout, sys.stderr):  # file names may hold bytes no encoding can print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        _check_paths(args)
        return args.func(args)
    except KeyboardInterrupt as stop:
        if args.debug:
            raise
        print("colortrack: interrupted", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    except (ColortrackError, OSError) as error:
        if args.debug:
            raise
        print(f"colortrack: error: {printable(_message(error))}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
