"""pi-check in order: the root, the bundle installed in it, the installed edge-classify against x86, the report."""

from __future__ import annotations

import fcntl
import sys
import time
from pathlib import Path

from . import report
from .common import GUEST, REPO, CheckError, log
from .compare import (classify_cli, classify_photo, find_data_dir, read_test_set, timing, write_photo, write_pngs,
                      TIMING_SNIPPET)
from .install import COMMAND, PREFIX, VENV_PYTHON, build_bundle, install, network_inside
from .root import CPUS, Root, binfmt_mode, host_mirror, preflight

MODELS = ["model_int8.tflite", "model_int8.onnx"]
DEFAULT_MODEL = "model_int8.tflite"     # install.sh --backend tflite,onnx makes it edge-classify's default
PHOTO_CANDIDATES = 10


def _model_args(model: str) -> list[str]:
    """How a user picks the model on the device: nothing for the default, --model for the other."""
    return [] if model == DEFAULT_MODEL else ["--model", f"{PREFIX}/release/{model}"]


def check(args) -> int:
    start = time.monotonic()
    model_dir = Path(args.model_dir).resolve()
    missing = [name for name in (*MODELS, "manifest.json") if not (model_dir / name).is_file()]
    if missing:
        raise CheckError(f"{model_dir}: missing {', '.join(missing)} "
                         "(run `make export`, or pass the model folder as the argument)")
    cpus = [c.strip() for c in args.cpus.split(",") if c.strip()]
    unknown = [c for c in cpus if c not in CPUS]
    if unknown:
        raise CheckError(f"unknown --cpus {', '.join(unknown)}; known: {', '.join(CPUS)}")
    data_dir = find_data_dir(args.data_dir)

    preflight()
    cache = Path(args.cache).resolve()
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = Root(cache, args.suite, binfmt_mode())
        built = False
        if root.ready() and root.info().get("suite") != args.suite:
            log(f"the cached root is {root.info().get('suite')}, not {args.suite}: rebuilding")
            args.rebuild = True
        if args.rebuild or not root.ready():
            root.build(host_mirror())
            built = True
        else:
            log(f"reusing the arm64 root {root.path} (built {root.info().get('built')}; --rebuild to redo)")

        # The device's install, as a user runs it on a Pi with no network.
        archive = build_bundle(model_dir, cache / "bundle")
        nets = network_inside(root)
        if nets != ["lo"]:
            raise CheckError(f"the root's network namespace has interfaces {nets}; expected only lo")
        log("network inside the root: only lo (a namespace of its own: nothing to reach)")
        took = install(root, archive)
        log(f"installed with the bundle's install.sh --backend tflite,onnx in {took:.0f} s (emulated, offline): "
            f"{PREFIX}/venv, /usr/local/bin/{COMMAND}")
        setup_s = time.monotonic() - start

        images, labels = read_test_set(data_dir, args.images)
        guest = root.path / GUEST.lstrip("/")
        img_dir = guest / "images"
        names = write_pngs(images, img_dir)
        truth = {n: int(l) for n, l in zip(names, labels)}
        host_files = [str(img_dir / n) for n in names]
        guest_files = [f"{GUEST}/images/{n}" for n in names]

        versions, here = report.guest_versions(root), report.host()
        report.log_versions(root, versions, here)
        result = {"arm64": versions, "root": root.info(), "host": here, "images": len(names), "cpus": cpus,
                  "models": {}, "root_built_this_run": built, "bundle": archive.name,
                  "bundle_bytes": archive.stat().st_size, "install_s": round(took, 1), "binfmt": root.binfmt}

        result["photo"] = _photo(root, model_dir, images, labels, guest, cpus[0])
        diffs: list[str] = []
        for name in MODELS:
            entry = result["models"][name] = {}
            x86, wall = classify_cli([sys.executable, "-m", "edge_runtime", "--json", "--top-k", "1", "--threads", "1",
                                      "--model", str(model_dir / name), *host_files],
                                     f"x86 {name}", len(names), cwd=REPO)
            acc = sum(x86[n]["index"] == truth[n] for n in names) / len(names)
            entry["x86"] = {"cli_wall_s": round(wall, 2), "accuracy": acc}
            log(f"{name}: x86 native   {len(names)} images, CLI {wall:5.1f} s, accuracy {acc:.1%}")
            for cpu in cpus:
                arm, wall = classify_cli(
                    root.command([COMMAND, "--json", "--top-k", "1", "--threads", "1", *_model_args(name),
                                  *guest_files], cpu=cpu),
                    f"arm64 {cpu} {name}", len(names))
                bad = report.mismatches(name, cpu, names, truth, x86, arm)
                max_dscore = max(abs(float(x86[n]["score"]) - float(arm[n]["score"])) for n in names)
                entry[cpu] = {"cli_wall_s": round(wall, 2), "top1_differences": len(bad),
                              "max_top1_score_difference": round(max_dscore, 6)}
                log(f"{name}: arm64 {cpu:<10} {COMMAND} {wall:5.1f} s (emulated), top-1 differences vs x86: "
                    f"{len(bad)}/{len(names)}, max |score diff| {max_dscore:.2g}")
                diffs += bad

        if not args.no_timing:
            _timing(root, model_dir, result, host_files[: args.timing_images], guest_files[: args.timing_images], cpus)

        result.update(wall_s=round(time.monotonic() - start, 1), setup_s=round(setup_s, 1), ok=not diffs,
                      differences=diffs)
        return report.finish(cache, result, len(names), cpus, MODELS)


def _photo(root: Root, model_dir: Path, images, labels, guest: Path, cpu: str) -> dict:
    """`edge-classify photo.jpg` (plain output, default model) in the root and on x86, for the first of a few
    test images drawn as photos that x86 answers right: both must give its true label."""
    photos = []
    for i in range(min(PHOTO_CANDIDATES, len(images))):
        path = guest / f"photo_{i}.jpg"
        write_photo(images[i], path)
        photos.append(path)
    x86_model = ["--model", str(model_dir / DEFAULT_MODEL)]
    answers, _ = classify_cli([sys.executable, "-m", "edge_runtime", "--json", "--top-k", "1", *x86_model,
                               *map(str, photos)], "x86 photos", len(photos), cwd=REPO)
    label_names = [a["label"] for a in answers.values()]
    chosen = next((i for i, p in enumerate(photos) if answers[p.name]["index"] == int(labels[i])), None)
    if chosen is None:
        raise CheckError(f"none of the first {len(photos)} test images drawn as photos is answered right on x86: "
                         f"{label_names}")
    photo = photos[chosen]
    x86 = classify_photo([sys.executable, "-m", "edge_runtime", *x86_model, str(photo)], "x86 photo", cwd=REPO)
    arm = classify_photo(root.command([COMMAND, f"{GUEST}/{photo.name}"], cpu=cpu), f"arm64 {cpu} photo")
    true = answers[photo.name]["label"]
    log(f"photo: `{COMMAND} {GUEST}/{photo.name}` in the root ({cpu}) answers {arm!r}; x86 {x86!r}; "
        f"true label {true!r}")
    if arm != true or x86 != true:
        raise CheckError(f"{photo.name}: arm64 answered {arm!r}, x86 {x86!r}, the true label is {true!r}")
    return {"file": photo.name, "test_index": chosen, "label": true, "arm64": arm, "x86": x86}


def _timing(root: Root, model_dir: Path, result: dict, host_files: list[str], guest_files: list[str],
            cpus: list[str]) -> None:
    log("latency through the API (num_threads=1, one image per call, PNG decode included):")
    for name in MODELS:
        t = timing([sys.executable, "-c", TIMING_SNIPPET, str(model_dir / name), *host_files], f"x86 {name}", cwd=REPO)
        result["models"][name]["x86"]["timing"] = t
        log(f"  {name:<18} x86 native (this host)     cold start {t['cold_start_s']:6.2f} s, "
            f"per image median {t['per_image_ms_median']:7.2f} ms, p90 {t['per_image_ms_p90']:7.2f} ms")
        for cpu in cpus:
            t = timing(root.command([VENV_PYTHON, "-c", TIMING_SNIPPET, f"{PREFIX}/release/{name}", *guest_files],
                                    cpu=cpu), f"arm64 {cpu} {name}")
            result["models"][name][cpu]["timing_emulated"] = t
            log(f"  {name:<18} arm64 {cpu} EMULATED  cold start {t['cold_start_s']:6.2f} s, "
                f"per image median {t['per_image_ms_median']:7.2f} ms, p90 {t['per_image_ms_p90']:7.2f} ms")
    log("  (EMULATED = qemu-user on this x86 host: shows the code runs, not how fast a Pi is)")
