"""`python -m pipeline tune` on a real local Ray: a tiny search stopped with SIGINT and resumed, a limit that
rejects configurations before training, the Pareto front, and `export --from-tune` on the result."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import TF_ENV
from pipeline.tune import space
from pipeline.config import make_config
from pipeline.errors import ConfigError

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the `tune` extra is not installed")
ROOT = Path(__file__).resolve().parents[1]


def _tune(out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "tune", "--out", str(out), *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **TF_ENV})


def test_pareto_flags_need_a_completed_trial_that_beats_on_every_axis():
    t = [{"status": "completed", "val_accuracy": 0.90, "int8_bytes": 50_000, "macs": 5e6},
         {"status": "completed", "val_accuracy": 0.85, "int8_bytes": 60_000, "macs": 6e6},   # beaten by the first
         {"status": "completed", "val_accuracy": 0.80, "int8_bytes": 10_000, "macs": 9e6},   # smallest file
         {"status": "stopped early", "val_accuracy": 0.99, "int8_bytes": 1_000, "macs": 1e5},
         {"status": "rejected", "val_accuracy": None, "int8_bytes": 900, "macs": 1e5}]
    assert space.pareto_flags(t) == [True, False, True, False, False]


def test_up_front_size_and_arena_are_the_trained_files_and_limits_reject_them():
    """The size and the TFLite Micro arena are known before training (the size to within 0.2 %: the converter's
    tables; the arena exactly: shapes decide it), so a limit rejects early, with the reason."""
    pytest.importorskip("tflite_micro", reason="the mcu extra: pip install 'fashion-edge[mcu]'")
    from pipeline.data import fashion_mnist
    from pipeline.quantize import representative, tflite
    from pipeline.train import fit
    params = dict(space.RELEASE_PARAMS)
    up = space.measure_up_front(params, space.Limits(max_int8_kb=40, max_macs=5e6, max_arena_kb=20))
    assert up["rejected"] == (f"int8 {up['int8_bytes'] / 1024:.1f} KB > 40 KB; 6.10 M MACs > 5 M; "
                              f"arena {up['arena_bytes'] / 1024:.1f} KB > 20 KB")
    assert up["macs"] == 6_103_880 and up["params"] == 47_554
    assert 20 * 1024 < up["arena_bytes"] < 40 * 1024          # the release's: 29,792 B with tflite-micro 0.dev20261023
    arena_only = space.measure_up_front(params, space.Limits(max_arena_kb=up["arena_bytes"] / 1024 - 0.1))
    assert arena_only["rejected"] == f"arena {up['arena_bytes'] / 1024:.1f} KB > {up['arena_bytes'] / 1024 - 0.1:g} KB"
    # a trained model of that architecture (1 epoch on 1,000 images) converts to the same size and arena
    cfg = space.trial_config(make_config("quick", **{"data.train_limit": 1000}), params, epochs=1)
    splits = fashion_mnist.load(cfg)
    model, _ = fit.train(cfg, splits)
    trained = tflite.to_tflite_int8(model, representative.calibration_images(cfg, splits))
    assert abs(len(trained) - up["int8_bytes"]) <= 0.002 * up["int8_bytes"], (len(trained), up["int8_bytes"])
    assert space.micro_arena(trained) == (up["arena_bytes"], None)
    fits = space.measure_up_front(params, space.Limits(max_int8_kb=64, max_arena_kb=up["arena_bytes"] / 1024))
    assert fits["rejected"] is None


def test_trial_config_proxy_schedule_and_pick():
    base = make_config("default", **{"data.train_limit": 2000})
    cfg = space.trial_config(base, {**space.RELEASE_PARAMS, "blocks": 2, "sparsity": 0.0}, epochs=1)
    assert cfg.train.model == "custom" and cfg.train.arch.widths == [16, 32] and not cfg.prune.enabled
    assert cfg.train.epochs == 1 and cfg.train.warmup_epochs == 0 and 2000 // cfg.train.batch_size >= 60
    result = {"trials": [{"trial_id": "a", "status": "completed", "pareto": True, "val_accuracy": 0.8, "int8_bytes": 9},
                         {"trial_id": "b", "status": "rejected", "pareto": False, "val_accuracy": None, "int8_bytes": 1}]}
    assert space.pick(result)["trial_id"] == "a"
    with pytest.raises(ConfigError, match="rejected before training"):
        space.pick(result, "b")
    with pytest.raises(ConfigError, match="no trial 'c'"):
        space.pick(result, "c")


def test_limit_rejects_every_configuration_before_training(tmp_path):
    """--max-int8-kb 4: nothing in the space fits; every trial ends before a single epoch, none trained."""
    proc = _tune(tmp_path / "s", "--trials", "2", "--epochs", "1", "--train-limit", "2000", "--max-int8-kb", "4")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    result = json.loads((tmp_path / "s" / "tune.json").read_text())
    assert [t["status"] for t in result["trials"]] == ["rejected", "rejected"]
    assert all(t["epochs"] == 0 and t["val_accuracy"] is None and t["int8_bytes"] > 4 * 1024 and not t["pareto"]
               and t["rejected"].startswith("int8 ") for t in result["trials"])
    assert "rejected before training" in out and "epoch 1/" not in out


def test_tiny_search_stopped_with_sigint_resumes_then_exports_from_tune(tmp_path):
    out_dir = tmp_path / "search"
    flags = ("--trials", "2", "--epochs", "1", "--train-limit", "2000", "--max-int8-kb", "64", "--max-concurrent", "1")
    proc = _tune(out_dir, *flags)
    lines = []
    deadline = time.time() + 240
    for line in proc.stdout:                       # stop it as soon as the first trial is done
        lines.append(line)
        if "done: val" in line:
            proc.send_signal(signal.SIGINT)
            break
        assert time.time() < deadline, "".join(lines)[-3000:]
    rest, _ = proc.communicate(timeout=240)
    first_run = "".join(lines) + rest
    assert proc.returncode == 130, first_run[-3000:]
    assert "rerun the same command to resume" in first_run
    partial = json.loads((out_dir / "tune.json").read_text())
    done_first = [t for t in partial["trials"] if t["status"] == "completed"]
    assert len(done_first) == 1 and done_first[0]["is_release_arch"]
    # the trial that was training when the search stopped is "interrupted", not "stopped early" (ASHA)
    assert {t["status"] for t in partial["trials"]} <= {"completed", "interrupted", "not started"}, partial["trials"]

    proc = _tune(out_dir, *flags)
    second_run, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, second_run[-3000:]
    assert "resuming the search" in second_run
    assert f"trial {done_first[0]['trial_id']} " not in second_run      # kept, not trained again
    result = json.loads((out_dir / "tune.json").read_text())
    assert result["engine"] == "ray" and result["ray_version"] == ray.__version__
    assert len(result["trials"]) == 2 and result["finished"]
    first = next(t for t in result["trials"] if t["trial_id"] == done_first[0]["trial_id"])
    assert first["val_accuracy"] == done_first[0]["val_accuracy"]
    for t in result["trials"]:
        assert set(t) >= {"config", "val_accuracy", "int8_bytes", "macs", "pareto"}
        if t["status"] == "completed":
            assert 0.3 < t["val_accuracy"] <= 1 and 0.3 < t["int8_val_accuracy"] <= 1
            assert t["int8_bytes"] <= 64 * 1024
    assert any(t["pareto"] for t in result["trials"])
    assert (out_dir / "pareto.png").stat().st_size > 10_000

    # the same folder with other settings is refused, in one line, before Ray starts
    proc = _tune(out_dir, "--trials", "3", "--epochs", "1", "--train-limit", "2000")
    msg, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "holds another search" in msg

    # a search result becomes a release through the usual chain and gate
    export_dir = tmp_path / "exported"
    from pipeline import cli
    code = cli.main(["export", "--profile", "quick", "--from-tune", str(out_dir), "--no-photos-train",
                     "--export-dir", str(export_dir), "--build-dir", str(tmp_path / "build"),
                     "--max-drop-pp", "100", "--min-agreement", "0"])
    assert code == 0
    manifest = json.loads((export_dir / "manifest.json").read_text())
    chosen = space.pick(result)
    assert manifest["config"]["train"]["model"] == "custom"
    assert manifest["config"]["train"]["arch"] == space.dataclasses.asdict(space.arch_of(chosen["config"]))
    assert chosen["trial_id"] in manifest["config"]["origin"]


def test_ray_is_only_in_the_tune_extra():
    """The device install (`pip install .[tflite]` / `.[onnx]`) and a plain `make export` never pull Ray."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for group, reqs in [("dependencies", project["dependencies"]), *extras.items()]:
        pulls = [r for r in reqs if r.split("[")[0].split("=")[0].split("<")[0].strip() in ("ray", "optuna")]
        assert bool(pulls) == (group == "tune"), (group, reqs)


def test_the_searcher_never_proposes_one_architecture_twice():
    """Optuna alone proposed one architecture 5 times in 40 trials; here a repeat is answered from the first
    trial's result and Optuna is asked again, so 3 proposals in a space of 3 architectures are all different."""
    from ray import tune as ray_tune

    from pipeline.tune.searcher import DistinctOptunaSearch
    choices = {k: ray_tune.choice([v]) for k, v in space.RELEASE_PARAMS.items()}
    choices["kernel"] = ray_tune.choice([3, 5, 7])
    choices["width4"] = ray_tune.choice([32, 48, 64])          # unused with 3 blocks: not a new architecture
    s = DistinctOptunaSearch(space=choices, metric="val_accuracy", mode="max", seed=0)
    seen = []
    for k in range(3):
        params = s.suggest(f"t{k}")
        seen.append(space.describe(params))
        s.on_trial_complete(f"t{k}", result={"val_accuracy": 0.5 + k / 10})
    assert len(set(seen)) == 3, seen
    assert s.skipped > 0


def test_the_first_trial_is_the_shipped_releases_architecture():
    """Read from the release's manifest: compact, a custom (tuned) one, or none for a model outside the family."""
    import json
    shipped = json.loads((ROOT / "exported" / "manifest.json").read_text())
    assert space.release_params(shipped) == space.RELEASE_PARAMS        # the committed release: compact
    tuned = {"config": {"train": {"model": "custom", "arch": {"widths": [24, 24, 24], "convs": 2, "kernel": 3,
                                                              "pool": "max", "separable": True}},
                        "prune": {"enabled": True, "target_sparsity": 0.25}}}
    p = space.release_params(tuned)
    assert space.describe(p) == "24-24-24 ×2 k3 max sep sparsity 25%"
    assert space.same_architecture({**p, "width4": 128}, p)                # an unused width is no new architecture
    assert space.release_params({"config": {"train": {"model": "tiny"}}}) is None
    odd = json.loads(json.dumps(tuned))
    odd["config"]["train"]["arch"]["widths"] = [20, 24, 24]                     # 20 is not in the space
    assert space.release_params(odd) is None
