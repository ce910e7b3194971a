"""`colortrack analyze`: where and why tracking fails, as a self-contained HTML report.

From `colortrack bench davis` predictions of one or more methods: J&F over time per sequence,
J&F by DAVIS attribute, each sequence's worst frames, and, given a model, how well it colorizes
each video (copying frame 0's colors with the tracking protocol) beside how well it tracks it,
as Vondrick et al. showed. Plots need matplotlib (pip install 'colortrack[plots]').
"""

from __future__ import annotations

import collections
import html
import itertools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from colortrack.data.annotations import read_mask
from colortrack.data.davis import DavisDataset, evaluate_davis
from colortrack.data.outputs import output_folder
from colortrack.data.video import read_image
from colortrack.errors import ColortrackError, UsageError
from colortrack.eval.metrics import VOID_ID
from colortrack.eval.plots import (
    img_tag,
    plot_attributes,
    plot_colorization,
    plot_over_time,
    plot_pck,
    png_of,
    pyplot,
)
from colortrack.track.visualize import overlay_mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodScores:
    """Per-frame J&F (percent, frames 1..T-2) of one method, by sequence."""

    name: str
    frames: dict[str, np.ndarray]

    def mean(self, sequence: str) -> float:
        return float(np.mean(self.frames[sequence]))


def score_predictions(root: str | Path, predictions: str | Path, name: str | None = None
                      ) -> MethodScores:
    """J&F of every frame of every sequence the predictions folder holds, averaged over
    objects (the official per-frame J and F)."""
    folder = Path(predictions)
    if not folder.is_dir():
        raise ColortrackError(f"{folder}: predictions folder not found")
    sequences = sorted(p.name for p in folder.iterdir() if p.is_dir())
    report = evaluate_davis(root, folder, sequences=sequences or None)
    frames = {s: 100 * ((x.j + x.f) / 2).mean(0) for s, x in report.scores.items()}
    return MethodScores(name or folder.name, frames)


def read_attributes(root: str | Path) -> dict[str, list[str]]:
    """DAVIS's attributes per sequence, from ROOT/db_info.yml (empty where it is missing)."""
    path = Path(root) / "db_info.yml"
    if not path.is_file():
        return {}
    import yaml

    try:
        info = yaml.safe_load(path.read_text(encoding="utf-8"))
        return {s["name"]: list(s.get("attributes") or []) for s in info["sequences"]}
    except (yaml.YAMLError, KeyError, TypeError, OSError, UnicodeDecodeError) as error:
        raise ColortrackError(f"{path}: not a DAVIS db_info.yml ({error})") from None


def by_attribute(methods: list[MethodScores], attributes: dict[str, list[str]]
                 ) -> dict[str, dict[str, float]]:
    """Mean J&F of the sequences having each attribute: {attribute: {method: J&F}}."""
    sequences = list(methods[0].frames)
    found = sorted({a for s in sequences for a in attributes.get(s, [])})
    table = {}
    for attribute in found:
        having = [s for s in sequences if attribute in attributes.get(s, [])]
        table[attribute] = {m.name: float(np.mean([m.mean(s) for s in having]))
                            for m in methods}
        table[attribute]["sequences"] = len(having)
    return table


def colorization_accuracy(root: str | Path, sequence: str, model: str | Path | None = None,
                          frames: int | None = None, bar: tqdm | None = None) -> float:
    """How well the model colorizes a video from its first frame: frame 0's color classes
    copied frame by frame with the tracking protocol (first frame + recent predictions, top-k,
    radius), the share of frames 1..'s feature cells whose most likely class is their true one.

    The classes are those training predicts, of each 8x8 cell's mean ab, and the copy stays on
    the encoder's grid: tracking's fast path without the upsampling to full frames."""
    import torch
    import torch.nn.functional as F

    from colortrack.color import quantize
    from colortrack.model.checkpoint import load_model
    from colortrack.model.features import fast_lab, pad_to_stride
    from colortrack.track.propagator import LearnedPropagator

    encoder, centroids, _ = load_model(model)
    paths = DavisDataset(root, sequences=[sequence]).frame_paths(sequence)[:frames]

    def classes(frame: np.ndarray) -> torch.Tensor:  # (h, w) on the encoder's grid
        ab = pad_to_stride(fast_lab(frame)[None, 1:], encoder.stride)
        return quantize(F.avg_pool2d(ab, encoder.stride), centroids)[0]

    truths: collections.deque[torch.Tensor] = collections.deque()

    def reading() -> Iterator[np.ndarray]:  # the truth of each frame as the copy reads it
        for path in paths[1:]:
            frame = read_image(path)
            truths.append(classes(frame))
            yield frame

    first = read_image(paths[0])
    cells = F.one_hot(classes(first), len(centroids)).permute(2, 0, 1).float()
    right = total = 0
    propagator = LearnedPropagator(encoder)
    run = propagator.copy(propagator.features(itertools.chain([first], reading())), cells)
    for soft in run:
        truth = truths.popleft()
        right += int((soft.argmax(0).cpu() == truth).sum())
        total += truth.numel()
        if bar is not None:
            bar.update()
    return 100 * right / max(total, 1)


def colorize_all(root: str | Path, sequences: list[str], model: str | Path | None,
                 progress: bool = True) -> dict[str, float]:
    """`colorization_accuracy` of every sequence, announced with a time estimate (from a few
    frames of the first) and shown with a progress bar."""
    counts = {s: len(DavisDataset(root, sequences=[s]).frame_paths(s)) - 1 for s in sequences}
    started, probe = time.perf_counter(), 4
    colorization_accuracy(root, sequences[0], model, frames=probe + 1)
    each = (time.perf_counter() - started) / probe
    total = sum(counts.values())
    log.info("colorizing %d frames of %d sequences with the model: about %s (--no-colorize "
             "skips it)", total, len(sequences), _duration(each * total))
    with tqdm(total=total, unit="frame", desc="colorizing", disable=not progress) as bar:
        return {s: colorization_accuracy(root, s, model, bar=bar) for s in sequences}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def pck_by_distance(tracks: str | Path, badja_root: str | Path, davis_root: str | Path,
                    bin_frames: int = 10) -> dict[int, float]:
    """PCK@0.2 of `bench badja` tracks (TRACKS/<seq>/points.json) by distance from the first
    annotated frame: {first frame of the bin: PCK over every joint scored in it}."""
    from colortrack.data.badja import read_badja
    from colortrack.data.keypoints import read_track_json
    from colortrack.eval.metrics import pck

    hits: dict[int, list[float]] = {}
    for folder in sorted(p for p in Path(tracks).iterdir() if (p / "points.json").is_file()):
        frames = sorted((Path(davis_root) / "JPEGImages" / "480p" / folder.name).glob("*.jpg"))
        annotation = Path(badja_root) / "joint_annotations" / f"{folder.name}.json"
        if not frames or not annotation.is_file():
            continue
        size = read_image(frames[0]).shape[1::-1]
        truth = {f: (xy, seen) for f, xy, seen in read_badja(annotation, image_size=size)}
        start = min(truth)
        predicted = {f: xy for f, xy, _ in read_track_json(folder / "points.json")[2]}
        for frame in sorted(truth):
            if frame > start and frame in predicted and truth[frame][1].any():
                xy, seen = truth[frame]
                score = pck(predicted[frame][None], xy[None], seen[None], (0.2,), "box")
                hits.setdefault((frame - start) // bin_frames * bin_frames, []).append(
                    score["PCK@0.2"])
    if not hits:
        raise ColortrackError(f"{tracks}: no BADJA track matches {badja_root}")
    return {d: float(np.mean(v)) for d, v in sorted(hits.items())}


def correlation(x: list[float], y: list[float]) -> tuple[float | None, str]:
    """Pearson's r of two series, or None and why it is not given (too few sequences, or a
    series that does not vary)."""
    if len(x) < 3:
        return None, (f"no correlation over {len(x)} sequence{'s' * (len(x) != 1)}; it needs 3 "
                      "or more")
    if np.std(x) == 0 or np.std(y) == 0:
        return None, "no correlation: one of the two is the same for every sequence"
    return float(np.corrcoef(x, y)[0, 1]), ""


def worst_frames(root: str | Path, predictions: Path, sequence: str, values: np.ndarray,
                 count: int = 3) -> list[tuple[int, bytes]]:
    """(frame, JPEG) of the `count` frames with the lowest J&F: frame | truth | prediction."""
    import cv2

    dataset = DavisDataset(root, sequences=[sequence])
    frames, masks = dataset.frame_paths(sequence), dataset.mask_paths(sequence)
    out = []
    for t in np.argsort(values)[:count] + 1:  # values start at frame 1
        image = read_image(frames[t])
        truth = read_mask(masks[t])
        truth[truth == VOID_ID] = 0
        predicted = read_mask(predictions / sequence / masks[t].name)
        row = np.concatenate([image, overlay_mask(image, truth), overlay_mask(image, predicted)], 1)
        row = cv2.resize(row, (row.shape[1] // 3, row.shape[0] // 3), interpolation=cv2.INTER_AREA)
        jpeg = cv2.imencode(".jpg", row[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])[1]
        out.append((int(t), jpeg.tobytes()))
    return out


# What `analyze` writes: the page and its plots (a user's own PNGs in OUT are not ours).
REPORT_FILES = frozenset({"report.html", "over_time.png", "attributes.png", "colorization.png",
                          "keypoints.png"})


def _report_file(name: str) -> bool:
    return name in REPORT_FILES


def analyze(root: str | Path, predictions: list[str | Path], out: str | Path, *,
            model: str | Path | None = None, colorize: bool = True, overwrite: bool = False,
            keypoints: str | Path | None = None, badja_root: str | Path | None = None,
            progress: bool = True) -> str:
    """Write OUT/report.html (and its plots as PNGs beside it); return the text summary.

    `predictions[0]` is the method analyzed in depth (worst frames, colorization); the others
    are compared with it. With `colorize`, the model (the shipped one by default) colorizes each
    sequence for the tracking-against-colorization plot. `keypoints` (`bench badja` tracks, with
    `badja_root`) adds PCK against the distance from the annotated frame."""
    plt = pyplot()
    out = Path(out)
    if out.is_dir() and any(map(_report_file, os.listdir(out))) and not overwrite:
        raise ColortrackError(f"{out}: already holds a report; pass --overwrite to replace it")
    methods = [score_predictions(root, p) for p in predictions]
    if len({m.name for m in methods}) < len(methods):
        methods = [MethodScores(str(p), m.frames) for p, m in zip(predictions, methods,
                                                                   strict=True)]
    sequences = list(methods[0].frames)
    for m in methods[1:]:
        if list(m.frames) != sequences:
            raise ColortrackError(f"{m.name}: holds other sequences than {methods[0].name}")
    attributes = read_attributes(root)
    table = by_attribute(methods, attributes)
    lines = [f"{'sequence':<20}" + "".join(f"{m.name:>14}" for m in methods)]
    lines += [f"{s:<20}" + "".join(f"{m.mean(s):>14.1f}" for m in methods) for s in sequences]
    lines.append(f"{'mean':<20}" + "".join(
        f"{np.mean([m.mean(s) for s in sequences]):>14.1f}" for m in methods))
    if table:
        bare = [s for s in sequences if not attributes.get(s)]
        lines += ["", f"{'attribute (sequences)':<24}" + "".join(f"{m.name:>14}" for m in methods)]
        lines += [f"{a + ' (' + str(int(v['sequences'])) + ')':<24}"
                  + "".join(f"{v[m.name]:>14.1f}" for m in methods) for a, v in table.items()]
        lines += [f"(no attribute in db_info.yml: {', '.join(bare)})"] if bare else []
    figures = {"over_time": plot_over_time(plt, methods)}
    if table:
        figures["attributes"] = plot_attributes(plt, table, methods)
    accuracy: dict[str, float] = {}
    if colorize:
        accuracy = colorize_all(root, sequences, model, progress)
        r, why = correlation(list(accuracy.values()), [methods[0].mean(s) for s in sequences])
        figures["colorization"] = plot_colorization(plt, accuracy, methods[0], r)
        lines += ["", f"colorization accuracy against {methods[0].name}'s J&F: " + (
            f"Pearson r = {r:.2f} over {len(sequences)} sequences" if r is not None else why)]
        lines += [f"  {s:<18} {accuracy[s]:6.1f} %  J&F {methods[0].mean(s):5.1f}"
                  for s in sequences]
    if keypoints is not None:
        if badja_root is None:
            raise UsageError("keypoint tracks need --badja-root, the BADJA annotations")
        curve = pck_by_distance(keypoints, badja_root, root)
        figures["keypoints"] = plot_pck(plt, curve)
        lines += ["", "PCK@0.2 by frames since the annotated one: " + ", ".join(
            f"{d}-{d + 9}: {v:.1f}" for d, v in curve.items())]
    with output_folder(out, overwrite=overwrite, ours=_report_file, what="a report") as stage:
        body = [f"<h1>colortrack analysis: {html.escape(methods[0].name)}</h1>",
                f"<pre>{html.escape(chr(10).join(lines))}</pre>"]
        for name, figure in figures.items():
            png = png_of(plt, figure)
            (stage / f"{name}.png").write_bytes(png)
            body.append(f"<h2>{name.replace('_', ' ')}</h2>" + img_tag(png))
        body.append(f"<h2>worst frames of {html.escape(methods[0].name)}: frame | truth | "
                    "prediction</h2>")
        for sequence in sequences:
            shots = worst_frames(root, Path(predictions[0]), sequence, methods[0].frames[sequence])
            body.append(f"<h3>{html.escape(sequence)}</h3>" + "".join(
                f"<figure>{img_tag(jpeg, f'{sequence} frame {t}', 'jpeg')}<figcaption>frame {t}: "
                f"J&F {methods[0].frames[sequence][t - 1]:.1f}</figcaption></figure>"
                for t, jpeg in shots))
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>colortrack analysis"
                "</title><style>body{font:14px system-ui,sans-serif;margin:16px}figure{display:"
                "inline-block;margin:4px}img{max-width:100%}</style></head><body>" + "\n".join(body)
                + "</body></html>")
        (stage / "report.html").write_text(page)
    return "\n".join(lines)

