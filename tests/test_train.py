"""Quick real trainings on a subset: the seeds learn, the edge models build and train, runs repeat."""
import json

import numpy as np
import pytest

from pipeline.data import fashion_mnist
from pipeline.train import models
from pipeline.train import fit
from pipeline.config import make_config, without_pruning


@pytest.fixture(scope="module")
def subset():
    cfg = make_config("default", **{"data.train_limit": 6000, "data.test_limit": 2000})
    return fashion_mnist.load(cfg)


def _cfg(tmp_path, model, **kw):
    return make_config("default", **{"train.model": model, "train.epochs": 2, "train.batch_size": 128,
                                     "train.warmup_epochs": 0.0, "build_dir": str(tmp_path), **kw})


def test_baseline_beats_75_percent_after_2_epochs_on_6000_images(subset, tmp_path):
    cfg = _cfg(tmp_path, "baseline", **{"train.optimizer": "adam", "train.augment": False})
    model, history = fit.train(cfg, subset)
    acc = float((fit.predict(model, subset.x_test, cfg).argmax(1) == subset.y_test).mean())
    print(f"baseline 2 epochs on 6000 images: {acc:.2%} on 2000 test images")
    assert acc > 0.75
    assert len(history["val_accuracy"]) == 2


def test_compact_trains_saves_and_reloads(subset, tmp_path):
    cfg = _cfg(tmp_path, "compact", **{"train.epochs": 1, "train.lr": 0.05})
    model, history, out = fit.train_or_load(cfg, subset)
    assert model.count_params() <= 50_000
    assert np.isfinite(history["loss"][0])
    assert json.loads((out / "config.json").read_text())["train"]["model"] == "compact"
    reloaded, _, out2 = fit.train_or_load(cfg, subset)           # the cache, not a retrain
    assert out2 == out
    x = subset.x_test[:64]
    assert np.allclose(fit.predict(model, x, cfg), fit.predict(reloaded, x, cfg), atol=1e-5)


def test_training_is_repeatable_with_a_seed(subset, tmp_path):
    cfg = _cfg(tmp_path, "mlp", **{"train.epochs": 1, "train.optimizer": "adam", "data.train_limit": 2000})
    small = fashion_mnist.split(subset.x_train, subset.y_train, subset.x_test, subset.y_test, val_size=500, seed=0,
                       train_limit=2000)
    a, _ = fit.train(cfg, small)
    b, _ = fit.train(cfg, small)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert np.allclose(wa, wb, atol=1e-6)


def test_model_sizes_match_their_specs():
    assert models.build("compact").count_params() <= 50_000
    assert models.build("tiny").count_params() <= 15_000
    assert models.macs(models.build("compact")) == 6_103_880


def test_pruning_carries_on_the_training_schedule_to_lr_zero():
    cfg = make_config("default")                      # 35 epochs, then 15 with pruning
    steps = 108
    main = fit.lr_schedule(cfg, steps)
    tail = fit.lr_schedule(cfg, steps, start_epoch=cfg.train.epochs)
    at_split = cfg.train.epochs * steps
    assert float(tail(0)) == pytest.approx(float(main(at_split)), rel=1e-6)
    assert 0.02 < float(tail(0)) < 0.1                 # still a useful lr when pruning starts
    assert float(tail(cfg.prune.epochs * steps)) == pytest.approx(0.0, abs=1e-7)
    # Stand-alone training (compare, folds, `train`) runs its own schedule to the end instead.
    alone = fit.lr_schedule(without_pruning(cfg), steps)
    assert float(alone(cfg.train.epochs * steps)) == pytest.approx(0.0, abs=1e-7)
    assert fit.cache_key(cfg) != fit.cache_key(without_pruning(cfg))


def test_compare_trains_a_seed_and_tabulates_it(tmp_path):
    from pipeline.evaluate import compare
    cfg = make_config("quick", build_dir=str(tmp_path))
    rows = compare.compare(cfg, ["mlp"])
    (row,) = rows
    assert row["epochs"] == 10 and row["optimizer"] == "adam"            # the tutorial way
    assert row["float_accuracy"] > 0.75 and abs(row["int8_accuracy"] - row["float_accuracy"]) < 0.02
    assert row["params"] == 101_770 and row["int8_bytes"] < 120_000 and row["latency_us"] > 0
    text = compare.table(rows, 1000)
    assert "| mlp | 10 epochs, adam | 101,770 |" in text
