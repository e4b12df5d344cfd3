"""`edge-classify`: classify image files, a camera or a video stream, or benchmark a model."""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

import numpy as np

from .classifier import Classifier, Prediction, format_predictions, json_answer
from .decode import IMAGE_EXTENSIONS, MAX_PIXELS, load_image
from .errors import EdgeError
from .preprocess import is_dataset_style, to_model_input
from .timing import call_seconds

DEFAULT_MODEL = Path("exported") / "model_int8.tflite"
MODEL_ENV = "FASHION_EDGE_MODEL"    # set by the device bundle's install: the release it installed
CHUNK = 64  # images preprocessed, then classified as one batch
BENCH_WARMUP = 50
PHOTO_BENCH_RUNS = 200  # at most: a photo costs ~40 model calls

EPILOG = """\
examples:
  edge-classify shirt.jpg photos/ 'more/**/*.png'
  edge-classify --model exported/model_int8.onnx --json --top-k 1 photos/ > answers.jsonl
  edge-classify --camera 0 --threshold 0.6          # USB camera; 'picamera' for the Pi camera
  edge-classify --camera clip.avi --max-frames 100
  edge-classify --camera 0 --collect my-photos --label Shirt --every 2   # then: --photos-train my-photos
  edge-classify --camera 0 --serve 0.0.0.0:8080      # live page for a headless Pi: prints http://<pi>:8080/?token=...
  edge-classify --bench

exit status: 0 all images classified, 1 some files could not be read, 2 the model, the camera or the
command line is unusable (reported before any image or frame is processed).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-classify",
        description=(
            "Classify clothing pictures with an exported Fashion-MNIST model (.tflite or .onnx).\n"
            "Prints one line per image: path<TAB>label score, label score, ...\n"
            "28x28 grayscale images are used as they are; photos are converted the way the\n"
            "Fashion-MNIST images were made (trim, resize, sharpen, pad, negate).\n"
            "Reads what Pillow reads (JPEG, also a phone's 108/200 Mpx ones, PNG, WebP, AVIF, ...) and\n"
            f"HEIC/HEIF with the heic extra; refuses what would decode to more than {MAX_PIXELS / 1e6:.0f} Mpx."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="PATH",
        help="image files, folders (searched recursively for image files) or glob patterns "
        "('**' matches any depth; quote it so the shell does not expand it)",
    )
    parser.add_argument(
        "--model", type=Path, default=default_model(),
        help="model file, .tflite or .onnx; labels, normalization and checksum come from manifest.json "
        "in the same folder, else labels and normalization from the model file's own metadata "
        f"(default: ${MODEL_ENV}, which the device bundle's install sets to the release it installed; "
        f"without it {DEFAULT_MODEL}, relative to the current folder; now: %(default)s)",
    )
    parser.add_argument("--top-k", type=_positive_int, default=3, metavar="K",
                        help="how many ranked labels to print per image (default: %(default)s)")
    parser.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                        help="CPU threads the runtime may use for one inference (default: %(default)s)")
    parser.add_argument("--no-verify", action="store_true",
                        help="load the model even if its sha256 does not match manifest.json")
    parser.add_argument("--threshold", type=_probability, metavar="P",
                        help="answer 'unsure' when the best score is below P (0..1); scores are "
                        "temperature-calibrated from manifest.json, so P is roughly the accuracy you ask for "
                        "on dataset-like images (report.md shows what P does on real photos); the ranked "
                        "labels are still printed, in parentheses")
    parser.add_argument("--json", action="store_true",
                        help='one JSON object per line: {"path", "label", "top_k": [{"label", "index", '
                        '"score"}, ...]}; with --bench, one object with the figures')
    camera = parser.add_argument_group("camera and video")
    camera.add_argument("--camera", metavar="SOURCE",
                        help="classify frames instead of files: a camera index (0), 'picamera' (Raspberry "
                        "Pi camera via picamera2), a video file or a stream URL (rtsp://, http://)")
    camera.add_argument("--max-frames", type=_positive_int, metavar="N",
                        help="stop after N frames (default: until the source ends or Ctrl-C)")
    camera.add_argument("--reconnect", action="store_true",
                        help="when a camera or stream drops, reopen it (5 tries, waiting 0.5 s, 1 s, 2 s, ...) "
                        "instead of stopping; a video file always stops at its end")
    serve = parser.add_argument_group("live view (headless device)")
    serve.add_argument("--serve", metavar="[HOST:]PORT",
                       help="serve a live page (the frame, the 28×28 image the model saw, top-k, fps, ms per stage) "
                       "and a JSON API (/api/latest, /api/events, POST /api/classify, /stream.mjpg, /healthz); "
                       "with --camera it runs the capture loop, without it the page classifies uploaded photos. "
                       "HOST defaults to 127.0.0.1 (this device only); --serve 0.0.0.0:8080 for the network, "
                       "where every endpoint but /healthz asks for a token")
    serve.add_argument("--token", metavar="TOKEN",
                       help="with --serve: the token to ask for (at least 16 of A-Z a-z 0-9 . _ ~ -), also on "
                       "loopback; prefer $FASHION_EDGE_TOKEN, which other users cannot read in the process list. "
                       "Without either, a network address gets a new token at every start, printed in the URL")
    serve.add_argument("--no-token", action="store_true",
                       help="with --serve on a network address: ask for no token (anyone who can reach the port "
                       "can watch the camera and send images)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="with --serve: also answer requests whose Host header is NAME (repeatable), e.g. the name "
                       "of a reverse proxy in front of the server. Without it only the server's own names are answered "
                       "(localhost and loopback addresses; on a network address also this machine's host name, "
                       "<hostname>.local and its addresses); any other Host gets 403, a defence against DNS "
                       "rebinding (a web page that points its own name at this device)")
    collect = parser.add_argument_group("collect training photos (adapt the model to your camera)")
    collect.add_argument("--collect", metavar="DIR", type=Path,
                         help="with --camera: also save raw frames as DIR/<class>/<UTC timestamp>.jpg, ready for "
                         "`python -m pipeline export --photos-train DIR`")
    collect.add_argument("--label", metavar="CLASS",
                         help="with --collect: the class of what the camera sees (one of the model's labels, any case)")
    collect.add_argument("--every", type=_seconds, default=1.0, metavar="S",
                         help="with --collect: save at most one frame every S seconds (default: %(default)s)")
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--bench", action="store_true",
                       help="measure batch-1 latency (median and p99 after a warm-up, on the first PATH or "
                       "a built-in test image) and cold start (import + load + first inference in a fresh "
                       "Python process), then exit; when PATH is a photo, also the whole photo path (decode, "
                       "cut-out, conversion, model), split by stage")
    bench.add_argument("--bench-runs", type=_positive_int, default=1000, metavar="N",
                       help="timed inferences for --bench (default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `edge-classify`; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs and not args.camera and not args.bench and not args.serve:
        parser.error("nothing to classify: give image files, folders or globs, --camera SOURCE, --serve PORT or --bench")
    if args.serve and (args.inputs or args.collect or args.bench):
        parser.error("--serve classifies the camera and uploads: do not also give image paths, --collect or --bench")
    if args.camera and args.inputs:
        parser.error("--camera classifies frames; do not also give image paths")
    if args.collect and not (args.camera and args.label):
        parser.error("--collect needs --camera SOURCE and --label CLASS")
    if (args.token is not None or args.no_token or args.allow_host) and not args.serve:
        parser.error("--token, --no-token and --allow-host are for --serve")
    if args.label and not args.collect:
        parser.error("--label names the class of collected frames: give --collect DIR too")
    try:
        try:
            classifier = Classifier(args.model, num_threads=args.threads, verify=not args.no_verify)
        except EdgeError as e:
            print(f"edge-classify: {e}", file=sys.stderr)
            return 2
        if args.serve:
            return _serve(args)
        if args.bench:
            return _bench(classifier, args, sys.stdout)
        if args.camera:
            return _camera(classifier, args)
        return _classify_files(classifier, args, sys.stdout, sys.stderr)
    except EdgeError as e:      # a model that loaded but cannot run (a corrupt file, found by fuzzing)
        print(f"edge-classify: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # the shell's convention for Ctrl-C
    except BrokenPipeError:
        # The reader (e.g. `head`) went away: stop quietly, as other command-line tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _serve(args: argparse.Namespace) -> int:
    from . import serve, serve_auth, serve_host    # only with --serve: nothing of the server is imported otherwise

    try:
        address = serve.parse_address(args.serve)
        access = serve_auth.resolve(address[0], args.token, args.no_token, os.environ)
        allow_hosts = serve_host.check_allowed(args.allow_host)
        return serve.run(args.model, address, camera=args.camera, top_k=args.top_k, threshold=args.threshold,
                         threads=args.threads, verify=not args.no_verify, access=access, allow_hosts=allow_hosts)
    except EdgeError as e:
        print(f"edge-classify: {e}", file=sys.stderr)
        return 2


def _camera(classifier: Classifier, args: argparse.Namespace) -> int:
    from .camera import run_camera
    from .collect import Collector

    try:
        collector = Collector(args.collect, args.label, classifier.labels, args.every) if args.collect else None
        run_camera(
            classifier, args.camera, max_frames=args.max_frames, top_k=args.top_k,
            threshold=args.threshold, reconnect=args.reconnect, collector=collector,
        )
    except EdgeError as e:
        print(f"edge-classify: {e}", file=sys.stderr)
        return 2
    return 0


def default_model() -> Path:
    """$FASHION_EDGE_MODEL when set (the bundle's install sets it), else exported/model_int8.tflite."""
    return Path(os.environ[MODEL_ENV]) if os.environ.get(MODEL_ENV) else DEFAULT_MODEL


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (recursive, image extensions only) and globs → (image paths, error lines)."""
    paths: list[Path] = []
    errors: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = _images_under(path)
            if not found:
                errors.append(f"{item}: folder contains no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            paths += found
        elif path.exists() or not any(c in item for c in "*?["):
            paths.append(path)  # a missing file is reported when it is read
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                errors.append(f"{item}: no files match")
            for match in matches:
                m = Path(match)
                paths += _images_under(m) if m.is_dir() else [m]
    return paths, errors


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _classify_files(classifier: Classifier, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    paths, errors = expand_inputs(args.inputs)
    for line in errors:
        print(line, file=err)
    failed = len(errors)
    for start in range(0, len(paths), CHUNK):
        good: list[Path] = []
        batch: list[np.ndarray] = []
        photos: list[bool] = []
        for path in paths[start : start + CHUNK]:
            try:
                image = load_image(path)
                batch.append(to_model_input(image))
                photos.append(not is_dataset_style(image))
                good.append(path)
            except EdgeError as e:
                print(str(e), file=err)
                failed += 1
        if not batch:
            continue
        for path, row in zip(good, classifier.scores(np.stack(batch), photos)):
            out.write(_format_line(path, classifier.top_k(row, args.top_k), args.threshold, args.json) + "\n")
        out.flush()
    return 1 if failed else 0


def _format_line(path: Path, predictions: list[Prediction], threshold: float | None, as_json: bool) -> str:
    if not as_json:
        return f"{path}\t{format_predictions(predictions, threshold)}"
    return json.dumps(json_answer(str(path), predictions, threshold), ensure_ascii=False)


def _bench(classifier: Classifier, args: argparse.Namespace, out: TextIO) -> int:
    photo = None
    if args.inputs:
        try:
            picture = load_image(args.inputs[0])
            image = to_model_input(picture)
        except EdgeError as e:
            print(f"edge-classify: {e}", file=sys.stderr)
            return 2
        if not is_dataset_style(picture):
            photo = Path(args.inputs[0])
    else:
        image = _builtin_test_image()
    batch = image[None]
    times = call_seconds(lambda: classifier.scores(batch), args.bench_runs, BENCH_WARMUP)
    try:
        cold = cold_start(classifier.model_path, args.threads, verify=not args.no_verify)
    except EdgeError as e:
        print(f"edge-classify: {e}", file=sys.stderr)
        return 2
    figures = {
        "model": str(classifier.model_path),
        "backend": type(classifier.backend).__name__,
        "threads": args.threads,
        "runs": args.bench_runs,
        "median_ms": round(float(np.median(times)) * 1e3, 4),
        "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 4),
        "mean_ms": round(float(times.mean()) * 1e3, 4),
        "cold_start_s": round(cold["in_process_s"], 4),
        "cold_start_with_python_s": round(cold["process_s"], 4),
    }
    if photo is not None:
        figures["photo"] = _bench_photo(classifier, photo, min(args.bench_runs, PHOTO_BENCH_RUNS), figures["median_ms"])
    if args.json:
        out.write(json.dumps(figures) + "\n")
        return 0
    out.write(
        f"{classifier.describe()}\n"
        f"latency, batch 1, {args.threads} thread(s), {args.bench_runs} runs after {BENCH_WARMUP} warm-up: "
        f"median {figures['median_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms, mean {figures['mean_ms']:.3f} ms\n"
        f"cold start (fresh process: import + load + first inference): {figures['cold_start_s']:.3f} s; "
        f"{figures['cold_start_with_python_s']:.3f} s including Python start-up (files in the OS cache)\n"
    )
    if photo is not None:
        p = figures["photo"]
        out.write(
            f"photo path ({photo}: decode, conversion, model on the photo and its mirror), {p['runs']} runs: "
            f"median {p['median_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms = {p['ratio_to_model_call']:.1f}× the model "
            f"call above; median per stage: " + ", ".join(f"{k} {v:.3f} ms" for k, v in p["stages_ms"].items()) + "\n"
        )
    return 0


def _bench_photo(classifier: Classifier, path: Path, runs: int, model_call_ms: float) -> dict:
    """The whole path of one photo file, timed per stage (edge_runtime.timing), as a device pays it."""
    from .timing import classify_timed, stage_medians_ms

    for _ in range(min(runs, 10)):
        classify_timed(classifier, path)
    timed = [classify_timed(classifier, path) for _ in range(runs)]
    totals = np.array([t.total for t in timed])
    ms = stage_medians_ms(timed)
    return {"path": str(path), "runs": runs, "median_ms": round(ms.pop("total"), 4),
            "p99_ms": round(float(np.percentile(totals, 99)) * 1e3, 4),
            "ratio_to_model_call": round(float(np.median(totals)) * 1e3 / model_call_ms, 2),
            "stages_ms": {k: round(v, 4) for k, v in ms.items()}}


# Run in a fresh interpreter: the clock starts before edge_runtime (numpy, Pillow, the backend) is
# imported and stops after the first inference returns.
_COLD_START_CODE = """\
import time
t0 = time.perf_counter()
import sys
import numpy as np
from edge_runtime.classifier import Classifier
c = Classifier(sys.argv[1], num_threads=int(sys.argv[2]), verify=sys.argv[3] == "1")
c.scores(np.zeros((1, 28, 28), np.uint8))
print(time.perf_counter() - t0)
"""


def cold_start(model_path: Path, threads: int = 1, verify: bool = True) -> dict[str, float]:
    """Seconds from a fresh Python process's first statement to its first inference result, and the
    whole process's wall time as seen from outside (includes interpreter start-up and exit)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-c", _COLD_START_CODE, str(model_path), str(threads), "1" if verify else "0"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeError(f"{model_path}: cold-start measurement failed in a fresh process: {last}")
    return {"in_process_s": float(done.stdout.strip().splitlines()[-1]), "process_s": wall}


def _builtin_test_image() -> np.ndarray:
    """A fixed garment-like 28×28 image (a light trapezoid on black) so --bench needs no files."""
    yy, xx = np.mgrid[0:28, 0:28]
    half_width = 4 + yy * 0.3
    shape = (np.abs(xx - 13.5) < half_width) & (yy > 2) & (yy < 26)
    return np.where(shape, 180, 0).astype(np.uint8)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {value}")
    return value


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value
