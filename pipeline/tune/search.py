"""`python -m pipeline tune`: a device-aware architecture search on Ray Tune.

Every trial is one short training (the proxy schedule: `--epochs` on `--train-limit` images, then pruning
to the trial's sparsity) run by Ray, locally with this machine's cores or on a cluster (`--address`).
Optuna's TPE proposes configurations (the release's architecture first, none twice), ASHA stops trials that trail at
an epoch, and configurations that break a limit (int8 size, MACs, TFLite Micro arena, latency ratio) are rejected
before any training. The objective is accuracy on the validation split, never the test set.

The search lives in OUT/ray (Ray's experiment folder): a killed search, rerun with the same command,
resumes there; OUT/tune.json and OUT/pareto.png are rewritten at the end of every run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from pipeline import TF_ENV
from pipeline.tune import space
from pipeline.config import Config, schedule_epochs
from pipeline.errors import ConfigError

METRIC = "val_accuracy"
EXPERIMENT = "ray"          # OUT/ray: Ray's experiment folder


def fashion_edge_trial(params: dict, *, base: dict, epochs: int, limits: dict, cpus: int) -> None:
    """One Ray Tune trial: check the limits, train on the proxy schedule reporting every epoch, and end with
    the int8 model's validation accuracy. Runs in a Ray worker process."""
    import pipeline  # noqa: F401  (the TensorFlow environment, before TensorFlow is imported)
    from ray import tune as ray_tune
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(cpus)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tf_keras as keras

    from pipeline.data import fashion_mnist
    from pipeline.train import prune
    from pipeline.quantize import representative, tflite
    from pipeline.train import fit
    from pipeline.config import make_config

    cfg = space.trial_config(make_config(base["profile"], **base["overrides"]), params, epochs)
    up_front = space.measure_up_front(params, space.Limits(**limits))
    first = {**up_front, "int8_bytes_up_front": up_front["int8_bytes"],
             "epochs_planned": schedule_epochs(cfg),
             "is_release_arch": space.same_architecture(params, base.get("release_params"))}
    if up_front["rejected"]:
        ray_tune.report({METRIC: 0.0, "status": "rejected", **first})
        return
    splits = fashion_mnist.load(cfg)
    total = schedule_epochs(cfg)
    done = {"epoch": 0}

    class Report(keras.callbacks.Callback):
        """Every epoch but the last goes to Ray as it ends (ASHA may stop the trial there)."""

        def on_epoch_end(self, epoch, logs=None):
            done["epoch"] += 1
            done["val"] = float((logs or {}).get("val_accuracy", 0.0))
            if done["epoch"] < total:
                ray_tune.report({METRIC: done["val"], "status": "running", **first})

    t0 = time.perf_counter()
    model, _ = fit.train(cfg, splits, callbacks=[Report()])
    model, info = prune.prune(model, cfg, splits, callbacks=[Report()]) if cfg.prune.enabled else (model, {})
    int8 = tflite.to_tflite_int8(model, representative.calibration_images(cfg, splits))
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_content=int8, num_threads=cpus)
    int8_val = _int8_accuracy(interp, fit.standardize(splits.x_val, cfg.data.mean, cfg.data.std), splits.y_val)
    ray_tune.report({METRIC: done["val"], "status": "completed", **first, "int8_val_accuracy": int8_val,
                     "int8_bytes": len(int8), "sparsity": info.get("measured_sparsity", 0.0),
                     "train_seconds": round(time.perf_counter() - t0, 1), "val_images": int(len(splits.y_val))})


def _int8_accuracy(interp, x, y) -> float:
    import numpy as np
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zero = inp["quantization"]
    interp.resize_tensor_input(inp["index"], [len(x), 28, 28, 1])
    interp.allocate_tensors()
    q = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    interp.set_tensor(inp["index"], q)
    interp.invoke()
    return float((interp.get_tensor(out["index"]).argmax(1) == y).mean())


STOPPED = "asha_stopped.json"   # OUT/…: trials ASHA stopped (Ray's state alone cannot tell them from interrupted ones)


def _stopped(out: Path) -> set[str]:
    try:
        return set(json.loads((out / STOPPED).read_text()))
    except (OSError, ValueError):
        return set()


def _progress(log, out: Path):
    """One line per trial event instead of Ray's tables; trials ASHA stops are written to OUT/asha_stopped.json."""
    from ray.tune import Callback

    class Progress(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result.get("status") == "running":
                log(f"trial {trial.trial_id} epoch {result['training_iteration']}/{result.get('epochs_planned')}: "
                    f"val {result[METRIC]:.2%}  ({space.describe(trial.config)})")

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            if r.get("status") == "rejected":
                log(f"trial {trial.trial_id} rejected before training: {r.get('rejected')}  "
                    f"({space.describe(trial.config)})")
            elif r.get("status") == "completed":
                log(f"trial {trial.trial_id} done: val {r[METRIC]:.2%}, int8 val {r.get('int8_val_accuracy', 0):.2%}, "
                    f"{r.get('int8_bytes', 0) / 1024:.1f} KB, {r.get('macs', 0) / 1e6:.2f} M MACs, "
                    + (f"arena {r['arena_bytes'] / 1024:.1f} KB, " if r.get("arena_bytes") else "")
                    + (f"latency {r['latency_ratio']:.2f}× the release, " if r.get("latency_ratio") else "")
                    + f"{r.get('train_seconds')} s  ({space.describe(trial.config)})")
            else:
                log(f"trial {trial.trial_id} stopped by ASHA after epoch {r.get('training_iteration')}")
                (out / STOPPED).write_text(json.dumps(sorted(_stopped(out) | {trial.trial_id})))

        def on_trial_error(self, iteration, trials, trial, **info):
            log(f"trial {trial.trial_id} failed ({space.describe(trial.config)}); see {trial.local_path}")
    return Progress()


def _space():
    from ray import tune as ray_tune
    return {name: ray_tune.choice(values) for name, values in space.SPACE.items()}


def _init_ray(address: str | None, log):
    import ray
    env = {"env_vars": dict(TF_ENV)}   # Ray starts fresh worker processes
    if address:
        # The cluster's nodes get this package with the job (they need the `pipeline` extra installed).
        import edge_runtime
        import pipeline
        env["py_modules"] = [str(Path(pipeline.__file__).parent), str(Path(edge_runtime.__file__).parent)]
        try:
            ray.init(address=address, runtime_env=env, logging_level="ERROR", log_to_driver=False)
        except ConnectionError as e:
            raise ConfigError(f"--address {address}: cannot connect to a Ray cluster there ({e})") from None
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=env, logging_level="ERROR",
                 log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    log(f"Ray {ray.__version__} {'at ' + address if address else 'local'}: {cpus} CPUs")
    return cpus


@dataclasses.dataclass
class TuneOptions:
    """`python -m pipeline tune`'s settings besides the base Config."""
    out: str
    trials: int = 20
    epochs: int = 3
    limits: space.Limits = dataclasses.field(default_factory=space.Limits)
    address: str | None = None
    max_concurrent: int | None = None
    cpus_per_trial: int = 1
    grace_epochs: int = 1
    seed: int = 0


def run(base_profile: str, base_overrides: dict, opts: TuneOptions, log=print) -> dict:
    """Run (or resume) the search; write OUT/tune.json and OUT/pareto.png; return tune.json's content."""
    if opts.address and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").is_file()):
        # Ray 2.60 clusters use token authentication once a token exists. `address="auto"` finds that out, an
        # explicit address does not (refused as unauthenticated), so do what `auto` does; before Ray is imported.
        os.environ["RAY_AUTH_MODE"] = "token"
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    from pipeline.tune.searcher import DistinctOptunaSearch

    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from pipeline.config import make_config
    base_cfg = make_config(base_profile, **base_overrides)
    out = Path(opts.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = {"trials": opts.trials, "epochs": opts.epochs, "limits": dataclasses.asdict(opts.limits),
                "cpus_per_trial": opts.cpus_per_trial, "grace_epochs": opts.grace_epochs, "seed": opts.seed,
                "base": {"profile": base_profile, "overrides": base_overrides}}
    _check_same_search(out, settings)
    cpus = _init_ray(opts.address, log)
    try:
        concurrent = opts.max_concurrent or max(1, cpus // opts.cpus_per_trial)
        max_t = schedule_epochs(space.trial_config(base_cfg, {**space.RELEASE_PARAMS,
                                                                              "sparsity": 0.5}, opts.epochs))
        first_point = space.release_params(_release_manifest(base_cfg))
        # Trials run in other processes (maybe other machines): hand them absolute paths.
        overrides = {**base_overrides, "build_dir": str(Path(base_cfg.build_dir).resolve())}
        if base_cfg.data.data_dir:
            overrides["data.data_dir"] = str(Path(base_cfg.data.data_dir).resolve())
        limits = dataclasses.asdict(opts.limits)
        if limits["release_tflite"]:
            limits["release_tflite"] = str(Path(limits["release_tflite"]).resolve())
        trainable = ray_tune.with_resources(
            ray_tune.with_parameters(fashion_edge_trial, base={"profile": base_profile, "overrides": overrides,
                                                               "release_params": first_point},
                                     epochs=opts.epochs, limits=limits, cpus=opts.cpus_per_trial),
            {"cpu": opts.cpus_per_trial})
        path = out / EXPERIMENT
        started = time.perf_counter()
        if ray_tune.Tuner.can_restore(str(path)):
            before = _trial_count(path)
            log(f"resuming the search in {path} ({before} trials started before; finished ones are kept)")
            tuner = ray_tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True,
                                           resume_errored=True)
        else:
            searcher = ConcurrencyLimiter(
                DistinctOptunaSearch(metric=METRIC, mode="max", seed=opts.seed,
                             points_to_evaluate=[first_point] if first_point else None),
                max_concurrent=concurrent)
            scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=opts.grace_epochs,
                                      reduction_factor=2)
            if first_point is None:
                log("the release in --export-dir is not of the compact family searched here: no trial of its architecture")
            log(f"searching {opts.trials} trials, {concurrent} at a time; proxy schedule {opts.epochs} epochs "
                f"(+ pruning) on {base_cfg.data.train_limit or 'all'} training images; ASHA stops laggards after "
                f"{opts.grace_epochs} epoch(s); Optuna TPE proposes, never one architecture twice; the release's "
                "architecture goes first")
            tuner = ray_tune.Tuner(
                trainable, param_space=_space(),
                tune_config=ray_tune.TuneConfig(metric=METRIC, mode="max", num_samples=opts.trials,
                                                search_alg=searcher, scheduler=scheduler),
                run_config=ray_tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=0,
                                              callbacks=[_progress(log, out)],
                                              failure_config=ray_tune.FailureConfig(max_failures=0)))
        results = tuner.fit()
        seconds = time.perf_counter() - started
        result = _write(out, results, settings, base_cfg, seconds, ray.__version__, log)
    finally:
        ray.shutdown()
    return result


def _check_same_search(out: Path, settings: dict) -> None:
    """A rerun into the same OUT resumes, so it must be the same search: else one clear line."""
    stamp = out / "search.json"
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old != json.loads(json.dumps(settings)):
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != json.loads(json.dumps(settings)).get(k))
            raise ConfigError(f"{out} holds another search (different {', '.join(diff)}): "
                              "rerun with the same settings to resume it, or give a new --out")
    else:
        stamp.write_text(json.dumps(settings, indent=1))


def _trial_count(path: Path) -> int:
    return sum(1 for p in path.iterdir() if p.is_dir() and (p / "params.json").is_file())


def _write(out: Path, results, settings: dict, base_cfg: Config, seconds: float, ray_version: str, log) -> dict:
    trials = []
    stopped = _stopped(out)
    for r in results:
        if not r.config:          # a trial Optuna had not proposed yet when the search was stopped
            continue
        m = dict(r.metrics or {})
        status = m.get("status")
        if r.error is not None:
            status = "failed"
        elif status == "running":
            status = "stopped early" if m.get("trial_id") in stopped else "interrupted"
        elif status is None:
            status = "not started"
        trials.append({
            "trial_id": m.get("trial_id") or _folder_id(r.path)[1],
            "number": _folder_id(r.path)[0],
            "config": {k: r.config[k] for k in space.SPACE if k in r.config},
            "architecture": space.describe(r.config) if r.config else None,
            "status": status,
            "rejected": m.get("rejected"),
            "epochs": int(m.get("training_iteration", 0)) if status not in ("rejected", "not started") else 0,
            "val_accuracy": None if status in ("rejected", "failed", "not started") else m.get(METRIC),
            "int8_val_accuracy": m.get("int8_val_accuracy"),
            "int8_bytes": m.get("int8_bytes"), "int8_bytes_up_front": m.get("int8_bytes_up_front"),
            "macs": m.get("macs"), "params": m.get("params"), "arena_bytes": m.get("arena_bytes"),
            "latency_ratio": m.get("latency_ratio"), "sparsity": m.get("sparsity"),
            "is_release_arch": bool(m.get("is_release_arch")),
            "train_seconds": m.get("train_seconds"),
            "error": str(r.error).splitlines()[0][:300] if r.error is not None else None,
        })
    trials.sort(key=lambda t: (t["number"], t["trial_id"]))
    for t, flag in zip(trials, space.pareto_flags(trials)):
        t["pareto"] = flag
    release = _release_figures(base_cfg)
    counts = {s: sum(t["status"] == s for t in trials) for s in sorted({t["status"] for t in trials})}
    finished = sum(t["status"] in ("completed", "rejected", "stopped early") for t in trials)
    result = {"engine": "ray", "ray_version": ray_version, "search": "optuna TPE + ASHA",
              "objective": "validation accuracy (float Keras at the last epoch; int8 too for completed trials)",
              "settings": settings, "seconds_this_run": round(seconds, 1), "counts": counts,
              "finished": finished >= settings["trials"],
              "release": release, "trials": trials}
    for name, text in (("tune.json", json.dumps(result, indent=1)), ("tune.md", markdown(result))):
        tmp = out / f"{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    space.plot(trials, out / "pareto.png", release, plot_title(result))
    log(f"{len(trials)} trials ({', '.join(f'{n} {s}' for s, n in counts.items())}) → {out / 'tune.json'}, "
        f"tune.md, pareto.png")
    if not result["finished"]:
        log(f"stopped with {finished} of {settings['trials']} trials finished: rerun the same command to resume")
    return result


def _folder_id(path: str) -> tuple[int, str]:
    """(creation number, trial id) from a trial's folder, fashion_edge_trial_<id>_<n>_<params>_<date>."""
    parts = Path(path).name.removeprefix("fashion_edge_trial_").split("_")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 10**9), parts[0]


def _release_manifest(cfg: Config) -> dict | None:
    try:
        return json.loads((Path(cfg.export_dir) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _release_figures(cfg: Config) -> dict | None:
    """The shipped release's int8 file size, MACs and TFLite Micro arena (measured from the file when the mcu extra
    is here), for the plot (None without a manifest)."""
    manifest = Path(cfg.export_dir) / "manifest.json"
    m = _release_manifest(cfg)
    if m is None:
        return None
    entry = next((a for a in m.get("artifacts", []) if a.get("file") == "model_int8.tflite"), {})
    model = manifest.parent / "model_int8.tflite"
    arena = space.micro_arena(model.read_bytes())[0] if model.is_file() else None
    return {"file": str(model), "int8_bytes": entry.get("bytes"), "arena_bytes": arena,
            "macs": (m.get("float_reference") or {}).get("macs"), "test_accuracy": entry.get("accuracy")}


def plot_title(result: dict) -> str:
    st = result["settings"]
    epochs = f"{st['epochs']} epoch{'' if st['epochs'] == 1 else 's'}"
    return (f"{len(result['trials'])} trials on Ray {result['ray_version']}, {epochs} (+ pruning) on "
            f"{st['base']['overrides'].get('data.train_limit') or 'all'} training images, validation split; "
            f"{result['counts'].get('rejected', 0)} rejected before training (not shown)")


def markdown(result: dict) -> str:
    """tune.md: the settings and every trial, Pareto trials first."""
    st = result["settings"]
    lim = ", ".join(f"{k} {v}" for k, v in st["limits"].items() if v is not None and k != "release_tflite") or "none"
    epochs = f"{st['epochs']} epoch{'' if st['epochs'] == 1 else 's'}"
    lines = [f"# Search: {len(result['trials'])} trials on Ray {result['ray_version']} ({result['search']})", "",
             f"Proxy schedule: {epochs} (+ pruning) on {st['base']['overrides'].get('data.train_limit') or 'all'} "
             f"training images; objective: {result['objective']}; limits: {lim}; "
             f"{', '.join(f'{n} {s}' for s, n in result['counts'].items())}.", "",
             "| trial | Pareto | architecture | status | val acc | int8 val acc | int8 bytes | TFLM arena bytes | MACs "
             "| params | latency ÷ release |",
             "|---|:-:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(result["trials"], key=lambda t: (not t["pareto"], -(t["val_accuracy"] or 0)))
    for t in order:
        pct = lambda v: f"{v:.2%}" if v is not None else "–"
        lines.append(f"| {t['trial_id']} | {'★' if t['pareto'] else ''} | {t['architecture']}"
                     f"{' (release architecture)' if t.get('is_release_arch') else ''} | {t['status']}"
                     f"{': ' + t['rejected'] if t.get('rejected') else ''} | {pct(t['val_accuracy'])} | "
                     f"{pct(t.get('int8_val_accuracy'))} | {t['int8_bytes'] or 0:,} | "
                     f"{'–' if t.get('arena_bytes') is None else format(t['arena_bytes'], ',')} | {(t['macs'] or 0) / 1e6:.2f} M | "
                     f"{t.get('params') or 0:,} | {t['latency_ratio'] if t.get('latency_ratio') is not None else '–'} |")
    return "\n".join(lines) + "\n"


def main_summary(result: dict) -> str:
    lines = [f"{'trial':>10}  {'status':<14} {'val acc':>8} {'int8 acc':>8} {'KB':>6} {'arenaKB':>7} {'MMACs':>6} "
             f"{'lat×':>5}  pareto  architecture"]
    for t in result["trials"]:
        acc = f"{t['val_accuracy']:.2%}" if t["val_accuracy"] is not None else "-"
        acc8 = f"{t['int8_val_accuracy']:.2%}" if t.get("int8_val_accuracy") is not None else "-"
        kb = f"{t['int8_bytes'] / 1024:.1f}" if t.get("int8_bytes") else "-"
        arena = f"{t['arena_bytes'] / 1024:.1f}" if t.get("arena_bytes") else "-"
        mm = f"{t['macs'] / 1e6:.2f}" if t.get("macs") else "-"
        lat = f"{t['latency_ratio']:.2f}" if t.get("latency_ratio") is not None else "-"
        lines.append(f"{t['trial_id']:>10}  {t['status']:<14} {acc:>8} {acc8:>8} {kb:>6} {arena:>7} {mm:>6} {lat:>5}  "
                     f"{'  *   ' if t['pareto'] else '      '}  {t['architecture']}"
                     + (f"  ({t['rejected']})" if t.get("rejected") else ""))
    return "\n".join(lines)


if __name__ == "__main__":      # pragma: no cover
    sys.exit("use: python -m pipeline tune --help")
