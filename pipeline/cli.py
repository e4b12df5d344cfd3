"""`python -m pipeline {train,export,compare,tune,mcu,photos,compat,bundle,pngs}`: a thin command line over the
stage functions (`export` runs the chain in pipeline/export.py)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.compat.clients import VENVS as COMPAT_VENVS
from pipeline.config import PROFILES, make_config, without_pruning
from pipeline.errors import ConfigError, PipelineError


def mean_std(value: str) -> list[float]:
    """'MEAN,STD' → [mean, std] (argparse names this function in its error)."""
    parts = value.split(",")
    if len(parts) != 2:
        raise ValueError(value)
    return [float(v) for v in parts]


def _common(p: argparse.ArgumentParser, epochs: bool = True) -> None:
    p.add_argument("--profile", default="default", choices=list(PROFILES),
                   help="training profile: default (fits `make export` in 30 min on 2 cores), "
                        "best (long schedule), quick (tests: subset, 4 + 2 epochs)")
    p.add_argument("--model", dest="train.model", choices=["mlp", "baseline", "compact", "tiny", "custom"],
                   help="architecture (default: compact; custom: the compact family shaped by --widths, --convs, "
                        "--kernel, --pool, --separable, as `tune` searches it)")
    if epochs:
        p.add_argument("--epochs", dest="train.epochs", type=int,
                       help="training epochs (export: before pruning; the schedule then runs --prune-epochs more)")
    p.add_argument("--batch-size", dest="train.batch_size", type=int)
    p.add_argument("--lr", dest="train.lr", type=float, help="peak learning rate")
    p.add_argument("--optimizer", dest="train.optimizer", choices=["sgd", "adam", "adam-cosine"],
                   help="sgd: Nesterov, warm-up + cosine (the recipe); adam: the seeds' tutorial way; adam-cosine: "
                        "Adam on the cosine schedule (an imported model's fine-tune)")
    p.add_argument("--no-augment", dest="train.augment", action="store_const", const=False,
                   help="train without the pad-and-crop + flip augmentation")
    p.add_argument("--photo-augment", dest="train.photo_augment", type=float, metavar="SHARE",
                   help="share of training images (0..1) given the phone-photo transform: scale, "
                        "rotation, lighting, blur, noise, JPEG blocks, imperfect masks")
    p.add_argument("--data-dir", dest="data.data_dir",
                   help="folder with the four IDX files (else $FASHION_MNIST_DIR, the Debian package, "
                        "the Keras cache, then a checked download)")
    p.add_argument("--train-limit", dest="data.train_limit", type=int, help="stratified training subset")
    p.add_argument("--test-limit", dest="data.test_limit", type=int, help="evaluate on the first N test images")
    p.add_argument("--seed", dest="seed", type=int)
    p.add_argument("--build-dir", dest="build_dir", help="stage cache and run outputs (default: build)")


def _arch(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--model custom (the compact family; defaults are compact's)")
    g.add_argument("--widths", dest="train.arch.widths", type=lambda v: [int(w) for w in v.split(",")],
                   metavar="W1,W2,..", help="filters per block, one block each (compact: 16,32,44)")
    g.add_argument("--convs", dest="train.arch.convs", type=int, metavar="N", help="conv-BN-ReLU per block (2)")
    g.add_argument("--kernel", dest="train.arch.kernel", type=int, choices=[1, 3, 5, 7], help="kernel size (3)")
    g.add_argument("--pool", dest="train.arch.pool", choices=["max", "avg"], help="pooling between blocks (max)")
    g.add_argument("--separable", dest="train.arch.separable", action="store_const", const=True,
                   help="depthwise-separable convs after the first")


def _overrides(args) -> dict:
    return {k: v for k, v in vars(args).items() if "." in k or k in ("seed", "build_dir", "export_dir")}


def _adapt_flags(p: argparse.ArgumentParser) -> None:
    """Adapt settings shared by `export` and `compare --photo-folds`."""
    p.add_argument("--photos-balance", dest="photos_train.balance", type=float, metavar="POWER",
                   help="photo classes drawn in proportion to count**POWER (0: equal, 1: as found; default 0.5)")
    p.add_argument("--footwear-pairs", dest="photos_train.footwear_pairs", type=int, metavar="N",
                   help="add N synthetic photos of shoe pairs seen from above per footwear class to the adapt photos "
                        "(pipeline/train/footwear_pairs.py; default 0)")


def _config(args):
    overrides = _overrides(args)
    if getattr(args, "trial", None) and not getattr(args, "from_tune", None):
        raise ConfigError("--trial needs --from-tune DIR")
    if getattr(args, "from_tune", None) and overrides.get("keras_model.path"):
        raise ConfigError("--from-tune and --keras-model each name the model to export: give one")
    if getattr(args, "from_tune", None):
        from pipeline.tune import space
        result = space.read_result(args.from_tune)
        trial = space.pick(result, args.trial)
        cfg = make_config(args.profile, **overrides)
        print(f"[from-tune] trial {trial['trial_id']} of {args.from_tune}: {trial['architecture']} "
              f"(proxy validation accuracy {trial['val_accuracy']:.2%}, int8 {trial['int8_bytes']:,} bytes, "
              f"{trial['macs'] / 1e6:.2f} M MACs); full schedule", file=sys.stderr)
        cfg = space.trial_config(cfg, trial["config"])
        origin = f"tune trial {trial['trial_id']} of {Path(args.from_tune).resolve()}"
        # Flags given beside --from-tune still win (e.g. --target-sparsity).
        given = {k: v for k, v in overrides.items() if v is not None}
        return make_config(args.profile, **{**_flatten(cfg), "origin": origin, **given})
    return make_config(args.profile, **overrides)


def _flatten(cfg) -> dict:
    """The trial's choices as dotted overrides (train.model, train.arch, prune.*)."""
    return {"train.model": cfg.train.model, "train.arch": cfg.train.arch, "prune.enabled": cfg.prune.enabled,
            "prune.target_sparsity": cfg.prune.target_sparsity}


def cmd_train(args) -> int:
    from pipeline.data import fashion_mnist
    from pipeline.release import report
    from pipeline.train import fit
    cfg = without_pruning(_config(args))
    splits = fashion_mnist.load(cfg)
    print(f"[data] {splits.describe()}", file=sys.stderr)
    model, history, out = fit.train_or_load(cfg, splits)
    probs = fit.predict(model, splits.x_test, cfg)
    acc = float((probs.argmax(1) == splits.y_test).mean())
    report.training_plots(out, splits, history, probs)
    print(json.dumps({"model": cfg.train.model, "params": model.count_params(),
                      "test_accuracy": round(acc, 4), "test_images": len(splits.y_test),
                      "train_seconds": round(history.get("seconds", 0), 1), "out": str(out)}))
    return 0


def cmd_export(args) -> int:
    cfg = _config(args)
    if cfg.keras_model.path:      # read the file for code before TensorFlow or a Keras loader touches it (#29)
        from pipeline.keras_import import scan
        cfg = scan.admit(cfg, trust=args.trust_model)
    from pipeline import export
    manifest = export.run(cfg)
    summary = {a["file"]: {"bytes": a["bytes"], "accuracy": a["accuracy"], "agreement": a["agreement_with_float"]}
               for a in manifest["artifacts"]}
    out = {"export_dir": cfg.export_dir, "float_accuracy": manifest["float_reference"]["accuracy"],
           "sparsity": manifest["pruning"]["measured_sparsity"], "artifacts": summary}
    if "import" in manifest:
        out["imported"] = {"file": manifest["import"]["file"], "float_accuracy": manifest["import"]["float_accuracy"],
                           "max_abs_diff": manifest["import"]["proof"]["max_abs_diff"]}
    print(json.dumps(out, indent=1))
    return 0


def cmd_compare(args) -> int:
    from pipeline.evaluate import compare
    cfg = _config(args)
    if args.photo_folds:
        return _photo_folds(cfg, args)
    if args.folds:
        result = compare.folds(cfg, args.folds)
        print(f"{result['model']}: {args.folds}-fold validation accuracy {result['mean']:.2%} "
              f"± {result['std']:.2%} (folds: {', '.join(f'{s:.2%}' for s in result['scores'])})")
        return 0
    rows = compare.compare(cfg, args.models)
    splits_n = cfg.data.test_limit or 10000
    text = compare.table(rows, splits_n)
    print(text)
    if args.write_report:
        from pipeline.release.report import set_comparison
        set_comparison(Path(cfg.export_dir), text)
    return 0


def _photo_folds(cfg, args) -> int:
    from pipeline.train import adapt
    from pipeline.data import fashion_mnist
    from pipeline.train import photo_variants
    from pipeline.train import prune
    from pipeline.release import report
    from pipeline.train import fit
    from pipeline.errors import DataError
    photos = photo_variants.load(cfg)
    if photos is None:
        raise DataError("no training photos: give --photos-train DIR (or set $FASHION_EDGE_PHOTOS_TRAIN)")
    splits = fashion_mnist.load(cfg)
    model, _, _ = fit.train_or_load(cfg, splits)
    pruned, _ = prune.prune_or_load(model, cfg, splits, fit.cache_key(cfg))
    r = adapt.sender_folds(cfg, splits, pruned, photos, args.photo_folds,
                           log=lambda m: print(f"[photo-folds] {m}", file=sys.stderr, flush=True))
    text = adapt.folds_table(r)
    print(text)
    if args.write_report:
        report.set_section(Path(cfg.export_dir), report.PHOTO_FOLDS_FILE, text)
    return 0


def cmd_pngs(args) -> int:
    from pipeline.data import fashion_mnist
    x, y, xt, yt, source = fashion_mnist.load_raw(args.data_dir)
    images, labels = (xt, yt) if args.split == "test" else (x, y)
    n = fashion_mnist.write_pngs(images[: args.limit], labels[: args.limit], args.out)
    print(f"wrote {n} {args.split} images from {source} to {args.out}/<class>_<name>/", file=sys.stderr)
    return 0


def cmd_photos(args) -> int:
    from pipeline.export import progress
    from pipeline.release import remeasure
    r = remeasure.remeasure_photos(Path(args.export_dir), args.photos, progress)
    per_class = ", ".join(f"{v['correct']}/{v['photos']}" for _, v in sorted(r["per_class"].items(), key=lambda kv: int(kv[0])))
    print(f"{r['model']} on {r['photos']} real photos ({r['folder']}): top-1 {r['accuracy']:.2%} "
          f"({r['correct']}/{r['photos']}; per class {per_class}); {args.export_dir}/manifest.json and report.md updated")
    return 0


def cmd_mcu(args) -> int:
    from pipeline.export import progress
    from pipeline.release import remeasure
    m = remeasure.remeasure_mcu(Path(args.export_dir), args.require_mcu, progress)
    if not m["for_microcontrollers"]:
        print(f"model_int8.tflite: not for microcontrollers: {m['why_not']}; {args.export_dir}/manifest.json and "
              "report.md updated")
        return 0
    fits = ", ".join(b["board"] for b in m["fits"] if b["fits"]) or "none of the boards"
    print(f"model_int8.tflite in TensorFlow Lite Micro: arena {m['arena_bytes']:,} B (reserve {m['arena_reserve_bytes']:,}),"
          f" flash {m['flash_bytes']:,} B, top-1 agreement {m['agreement']['top1_agreement']:.2%} on "
          f"{m['agreement']['images']:,} images; fits {fits}; C source in {args.export_dir}/mcu/")
    return 0


def cmd_tune(args) -> int:
    import importlib.util
    missing = [m for m in ("ray", "optuna") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"the search needs {' and '.join(missing)}: pip install -e '.[pipeline,tune]'")
    from pipeline.tune import search
    from pipeline.tune.space import Limits
    overrides = _overrides(args)
    if overrides.get("train.model"):
        raise ConfigError("--model does not apply to `tune`: it searches the compact family (`--model custom`)")
    make_config(args.profile, **overrides)            # bad flags: one line now, not in every trial
    if args.trials < 1 or args.epochs_proxy < 1:
        raise ConfigError(f"--trials and --epochs must be at least 1 (got {args.trials}, {args.epochs_proxy})")
    release = Path(args.export_dir) / "model_int8.tflite"
    if args.max_latency_ratio is not None and not release.is_file():
        raise ConfigError(f"--max-latency-ratio needs the release's {release} to measure against")
    if args.max_arena_kb is not None:
        from pipeline.mcu import micro
        micro.version()                               # a missing mcu extra: one line now, not in every trial
    opts = search.TuneOptions(out=args.out, trials=args.trials, epochs=args.epochs_proxy,
                            limits=Limits(max_int8_kb=args.max_int8_kb, max_macs=args.max_macs,
                                          max_latency_ratio=args.max_latency_ratio,
                                          release_tflite=str(release) if release.is_file() else None,
                                          max_arena_kb=args.max_arena_kb),
                            address=args.address, max_concurrent=args.max_concurrent,
                            cpus_per_trial=args.cpus_per_trial, seed=args.seed or 0,
                            grace_epochs=args.grace_epochs or max(1, round(0.75 * args.epochs_proxy)))
    result = search.run(args.profile, overrides, opts, log=lambda m: print(f"[tune] {m}", file=sys.stderr, flush=True))
    print(search.main_summary(result))
    return 0 if result["finished"] else 130


def cmd_compat(args) -> int:
    from pipeline.compat import clients
    rows = clients.run(Path(args.exported), Path(args.build_dir), args.clients,
                      log=lambda m: print(f"[compat] {m}", file=sys.stderr, flush=True))
    print(clients.write(Path(args.exported), rows, Path(args.readme) if args.readme else None))
    return 0


def cmd_bundle(args) -> int:
    from pipeline.bundle import tarball
    extras = [e.strip() for e in args.extras.split(",") if e.strip()] if args.extras else None
    archive = tarball.build(Path(args.release), Path(args.dist), with_wheels=args.with_wheels, target=args.target,
                           extras=extras, log=lambda m: print(m, file=sys.stderr, flush=True))
    lines = tarball.describe(archive)
    print("\n".join(lines))
    print(f"{archive}: {archive.stat().st_size:,} bytes, {len(lines)} files")
    return 0


def tune_doc() -> str:
    from pipeline.tune import search
    from pipeline.tune import space
    return (search.__doc__ + "\nSearch space: " + "; ".join(f"{k} {v}" for k, v in space.SPACE.items())
            + ". Needs the `tune` extra: pip install -e '.[pipeline,tune]'.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train one model, save it with its history and plots under build/")
    _common(p)
    _arch(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("export", help="train (or reuse), prune, quantize, export TFLite + ONNX, validate "
                                      "every artifact and promote to exported/ only if the parity gate passes")
    _common(p)
    _arch(p)
    p.add_argument("--export-dir", dest="export_dir", help="release folder (default: exported)")
    p.add_argument("--target-sparsity", dest="prune.target_sparsity", type=float, help="pruning target (default 0.5)")
    p.add_argument("--prune-epochs", dest="prune.epochs", type=int, help="epochs trained with pruning: the last ones of the cosine schedule (default 15)")
    p.add_argument("--calibration-size", dest="quant.calibration_size", type=int, help="int8 calibration images from the training split")
    p.add_argument("--photos-train", dest="photos_train.dir", metavar="DIR",
                   help="real photos to adapt the model on after pruning: a folder with a MANIFEST.tsv like "
                        "../shared/real-photos-train, or DIR/<class name>/*.jpg (default: $FASHION_EDGE_PHOTOS_TRAIN, "
                        "else ../shared/real-photos-train when present)")
    p.add_argument("--no-photos-train", dest="photos_train.auto", action="store_const", const=False,
                   help="do not look for training photos: the Fashion-MNIST-only model ships")
    p.add_argument("--photos-share", dest="photos_train.share", type=float, metavar="SHARE",
                   help="share of every adapt batch that is photo variants (default 0.05)")
    p.add_argument("--photos-epochs", dest="photos_train.epochs", type=int, metavar="N",
                   help="epochs of the adapt fine-tune (default 3)")
    p.add_argument("--photos-variants", dest="photos_train.variants", type=int, metavar="N",
                   help="augmented variants per training photo, besides the photo itself (default 8)")
    _adapt_flags(p)
    p.add_argument("--exclude-senders-of", dest="photos_train.exclude_senders_of", metavar="DIR",
                   help="leave out training photos whose sender_id appears in DIR/MANIFEST.tsv (a sender-disjoint figure)")
    p.add_argument("--from-tune", metavar="DIR", help="export a trial of `python -m pipeline tune --out DIR` with the "
                                                    "full schedule: --trial ID, else the most accurate on its Pareto front")
    p.add_argument("--trial", metavar="ID", help="with --from-tune: which trial (its trial_id in DIR/tune.json)")
    g = p.add_argument_group("bring your own model (--keras-model)")
    g.add_argument("--keras-model", dest="keras_model.path", metavar="PATH",
                   help="export YOUR Fashion-MNIST model instead of training ours: a Keras 3 .keras file, an HDF5 .h5 "
                        "(saved by Keras 2 / tf_keras or Keras 3) or a SavedModel folder. It must take one 28x28 image "
                        "(with or without the channel axis) and give 10 scores (softmax or logits). It is rebuilt in "
                        "tf_keras, proven equal to the file on the test images, pruned (--prune-epochs of Adam "
                        "fine-tuning), quantized and gated like ours")
    g.add_argument("--input-scale", dest="keras_model.input_scale", type=float, metavar="S",
                   help="the model takes pixel * S (1: raw 0..255 pixels). Default: what the model's own Rescaling or "
                        "Normalization layer says, else pixel / 255")
    g.add_argument("--normalization", dest="keras_model.normalization", metavar="MEAN,STD",
                   type=mean_std,
                   help="the model takes (pixel/255 - MEAN) / STD, e.g. 0.2860,0.3530")
    g.add_argument("--min-accuracy", dest="keras_model.min_accuracy", type=float, metavar="A",
                   help="refuse a model whose float test accuracy is below A: its normalization is wrong (default 0.5)")
    g.add_argument("--compare-with", dest="keras_model.release", metavar="DIR",
                   help="the shipped release the report measures beside your model (default: exported)")
    g.add_argument("--trust-model", dest="trust_model", action="store_true",
                   help="I wrote this file / I trust its code, which will run here: export a model that carries code "
                        "(a Lambda layer, a layer or object that is not Keras's own, graph ops that read or write "
                        "files or call Python), which is refused otherwise; the manifest records what it carried")
    p.add_argument("--no-prune", dest="prune.enabled", action="store_const", const=False,
                   help="do not prune: the float model is quantized and exported as it is")
    p.add_argument("--max-drop-pp", dest="gate.max_drop_pp", type=float, help="gate: largest accuracy drop vs float, in pp (default 0.3)")
    p.add_argument("--min-agreement", dest="gate.min_agreement", type=float, help="gate: smallest top-1 agreement with float (default 0.99)")
    p.add_argument("--require-mcu", dest="mcu.require", action="store_const", const=True,
                   help="fail the export when model_int8.tflite cannot run in TensorFlow Lite Micro or disagrees with "
                        "LiteRT's reference kernels (default: the release is marked 'not for microcontrollers' and ships)")
    p.add_argument("--no-mcu", dest="mcu.enabled", action="store_const", const=False,
                   help="skip the microcontroller stage (TensorFlow Lite Micro parity, arena, flash, C source)")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("compare", help="train/evaluate several models into one table (params, MACs, float and "
                                       "int8 accuracy, int8 size, batch-1 latency), or a k-fold estimate")
    _common(p)
    p.add_argument("--models", nargs="+", default=["mlp", "baseline", "compact", "tiny"],
                   help="models to compare (seeds trained the tutorial way: Adam, 10 epochs)")
    p.add_argument("--folds", type=int, help="k-fold estimate (mean ± std) of --model on the training set instead")
    p.add_argument("--photo-folds", type=int, metavar="K",
                   help="instead: sender-grouped K-fold figure of adapting on the training photos (--photos-train, "
                        "else the default folder), the release recipe's model before and after, into report.md")
    p.add_argument("--photos-train", dest="photos_train.dir", metavar="DIR",
                   help="with --photo-folds: the training photos (default: $FASHION_EDGE_PHOTOS_TRAIN, "
                        "../shared/real-photos-train)")
    _adapt_flags(p)
    p.add_argument("--export-dir", dest="export_dir", default="exported")
    p.add_argument("--no-report", dest="write_report", action="store_false",
                   help="do not write the table into <export-dir>/report.md")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("tune", help="device-aware architecture search on Ray Tune (Optuna + ASHA): short trainings "
                                    "of the compact family under size / MACs / latency limits → OUT/tune.json, OUT/pareto.png",
                       description=tune_doc(), formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p, epochs=False)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the search's folder: Ray's state (DIR/ray), tune.json, pareto.png. Rerun the same command to "
                        "resume a search that was stopped")
    p.add_argument("--trials", type=int, default=20, help="configurations to try (default 20)")
    p.add_argument("--epochs", dest="epochs_proxy", type=int, default=3,
                   help="training epochs of the proxy schedule per trial; pruned trials add the release's share of "
                        "pruning epochs (default 3)")
    p.add_argument("--max-int8-kb", type=float, metavar="KB", help="reject configurations whose int8 .tflite is larger")
    p.add_argument("--max-macs", type=float, metavar="N", help="reject configurations with more multiply-accumulates per image")
    p.add_argument("--max-arena-kb", type=float, metavar="KB",
                   help="reject configurations whose smallest TensorFlow Lite Micro arena (the untrained int8 model, "
                        "measured up front) is larger; needs the mcu extra")
    p.add_argument("--max-latency-ratio", type=float, metavar="R",
                   help="reject configurations whose LiteRT batch-1 latency (untrained, measured up front on this "
                        "machine) is over R × the release's model_int8.tflite")
    p.add_argument("--export-dir", dest="export_dir", default="exported",
                   help="the release to compare with: its model_int8.tflite's size in the plot, and every trial's "
                        "LiteRT latency ratio to it, measured up front (default: exported)")
    p.add_argument("--address", help="an existing Ray cluster (host:6379, or auto for the one `ray start` made here); "
                                     "its nodes need this project's `pipeline` extra installed; a token-authenticated "
                                     "cluster needs its token in ~/.ray/auth_token or $RAY_AUTH_TOKEN. Default: Ray "
                                     "starts locally with this machine's cores")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="trials at once (default: the cluster's CPUs / --cpus-per-trial)")
    p.add_argument("--cpus-per-trial", type=int, default=1, metavar="N", help="CPUs (and TensorFlow threads) per trial (default 1)")
    p.add_argument("--grace-epochs", type=int, metavar="N",
                   help="ASHA: epochs before a trial may be stopped (default: 3/4 of --epochs; the first epochs of a "
                        "short schedule rank trials badly: at 1 the release's own architecture was stopped)")
    p.set_defaults(func=cmd_tune)
    p = sub.add_parser("mcu", help="measure only the microcontroller figures of a release (TensorFlow Lite Micro "
                                   "parity, arena, flash, C source in mcu/), e.g. one exported before the MCU stage")
    p.add_argument("--export-dir", default="exported", help="release folder (default: exported)")
    p.add_argument("--require-mcu", action="store_true",
                   help="exit non-zero when the model cannot run in TensorFlow Lite Micro (default: the release is "
                        "marked 'not for microcontrollers')")
    p.set_defaults(func=cmd_mcu)
    p = sub.add_parser("photos", help="re-measure only the real photos on a release (after a change to the photo "
                                      "conversion): manifest, report, contact sheet and confusion plot are rewritten")
    p.add_argument("--export-dir", default="exported", help="release folder (default: exported)")
    p.add_argument("--photos", help="real-photos-dev folder (default: $FASHION_EDGE_PHOTOS, else ../shared/real-photos-dev)")
    p.set_defaults(func=cmd_photos)
    p = sub.add_parser("compat", help="run the release in MediaPipe, OpenCV DNN 4.x/5.x, tflite-runtime, LiteRT (both "
                                      "kernel sets) and onnxruntime on the test images: <exported>/compat.md, README table")
    p.add_argument("--exported", default="exported", help="release folder (default: exported)")
    p.add_argument("--build-dir", default="build", help="where the clients' small venvs are kept (default: build)")
    p.add_argument("--clients", nargs="+", choices=["ours", "local", *COMPAT_VENVS],
                   help="only these (default: all): ours = LiteRT + onnxruntime, local = OpenCV of this venv")
    p.add_argument("--readme", help="also put the table between the compat markers of this README")
    p.set_defaults(func=cmd_compat)
    p = sub.add_parser("bundle", help="one file for the device: edge_runtime as a wheel (no pipeline, no TensorFlow), "
                                      "the release's int8 models, manifest.json, labels.txt and install.sh → dist/")
    p.add_argument("--release", default="exported", help="release folder (default: exported)")
    p.add_argument("--dist", default="dist", help="where the bundle is written (default: dist)")
    p.add_argument("--with-wheels", action="store_true",
                   help="also every wheel the device needs (numpy, pillow, ai-edge-litert, onnxruntime, OpenCV and "
                        "their dependencies, this venv's versions) for --target: install.sh then needs no network")
    p.add_argument("--target", default="aarch64-cp311",
                   help="with --with-wheels: aarch64-cp311 (64-bit Raspberry Pi OS bookworm, the default) or x86_64-cp311")
    p.add_argument("--extras", metavar="E1,E2",
                   help="with --with-wheels: the wheels of these extras only (default: all the device extras: "
                        "tflite,onnx,camera and heic where pyproject.toml has it)")
    p.set_defaults(func=cmd_bundle)
    p = sub.add_parser("pngs", help="write the official images as PNG files, one folder per class")
    p.add_argument("out", help="output folder")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_pngs)
    for subparser in sub.choices.values():      # `--epochs N`, not `--epochs TRAIN.EPOCHS`
        for action in subparser._actions:
            if "." in (action.dest or "") and action.metavar is None and action.nargs != 0 \
                    and not action.choices:
                action.metavar = action.dest.rsplit(".", 1)[1].upper()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        code = args.func(args)
        print(f"[{args.command}] wall time {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        return code
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:          # disk full, permissions, file too large: one line, nothing promoted
        print(f"error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 1
