"""Train a float model: tf.data input, SGD-Nesterov warm-up + cosine (or the seeds' Adam), seeded."""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipeline.train import models
from pipeline.train import augment
from pipeline.config import Config, schedule_epochs
from pipeline.train import cache


def standardize(x_uint8: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(x/255 - mean)/std with a channel axis: exactly what the device computes before quantizing."""
    return ((x_uint8.astype(np.float32) / 255.0 - mean) / std)[..., None]


def dataset(x: np.ndarray, y: np.ndarray, cfg: Config, training: bool) -> tf.data.Dataset:
    """Standardized, one-hot, batched; training adds shuffle, pad-2 random crop and horizontal flip,
    and (cfg.train.photo_augment > 0) the phone-photo transform of `photo_augment` on that share.

    tf.data's autotuner is off: its model thread made every iterator teardown, i.e. every epoch
    boundary inside `fit`, wait up to ~30 s for it to wake (measured with py-spy on TF 2.21)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    mean, std = cfg.data.mean, cfg.data.std
    if not training:
        xs = tf.constant(standardize(x, mean, std))
        ys = tf.constant(keras.utils.to_categorical(y, 10).astype(np.float32))
        return tf.data.Dataset.from_tensor_slices((xs, ys)).batch(1024).prefetch(2).with_options(options)
    xs = tf.constant(x[..., None])                            # uint8: 4x less memory than floats
    ys = tf.constant(keras.utils.to_categorical(y, 10).astype(np.float32))
    t = cfg.train
    ds = tf.data.Dataset.range(len(y)).shuffle(len(y), seed=cfg.seed, reshuffle_each_iteration=True)
    ds = ds.batch(t.batch_size)

    def batch(i):      # whole batches at once: per-image tf.data maps cost more than the model here
        img = tf.cast(tf.gather(xs, i), tf.float32) / 255.0
        if t.augment:
            img = augment.shift_and_flip(img)
        if t.photo_augment > 0:
            img = augment.photo(img, t.photo_augment)
        return (img - mean) / std, tf.gather(ys, i)
    return ds.map(batch, num_parallel_calls=2, deterministic=True).prefetch(2).with_options(options)


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to 0 at `total` steps.
    `start` offsets the optimizer's step: a later stage (pruning) carries on the same schedule."""

    def __init__(self, peak: float, warmup: int, total: int, start: int = 0):
        self.peak, self.warmup, self.total, self.start = peak, warmup, total, start

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + self.start
        warm = self.peak * (step + 1) / max(self.warmup, 1)
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        cosine = 0.5 * self.peak * (1 + tf.cos(math.pi * tf.clip_by_value(progress, 0.0, 1.0)))
        return tf.where(step < self.warmup, warm, cosine)

    def get_config(self):
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total, "start": self.start}


def lr_schedule(cfg: Config, steps_per_epoch: int, start_epoch: int = 0) -> WarmupCosine:
    """The recipe's warm-up + cosine over the whole schedule (`schedule_epochs`), entered at `start_epoch`."""
    t = cfg.train
    return WarmupCosine(t.lr, int(t.warmup_epochs * steps_per_epoch), schedule_epochs(cfg) * steps_per_epoch,
                        start=start_epoch * steps_per_epoch)


def optimizer(cfg: Config, steps_per_epoch: int, start_epoch: int = 0):
    t = cfg.train
    if t.optimizer == "adam":
        return keras.optimizers.Adam(1e-3)
    if t.optimizer == "adam-cosine":
        return keras.optimizers.Adam(lr_schedule(cfg, steps_per_epoch, start_epoch))
    return keras.optimizers.SGD(lr_schedule(cfg, steps_per_epoch, start_epoch), momentum=t.momentum, nesterov=True)


def compile_model(model: keras.Model, cfg: Config, steps_per_epoch: int, start_epoch: int = 0):
    model.compile(optimizer=optimizer(cfg, steps_per_epoch, start_epoch),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
                  metrics=["accuracy"])


class EpochLog(keras.callbacks.Callback):
    """One progress line per epoch, with the time it took."""

    def __init__(self, stage: str, epochs: int):
        super().__init__()
        self.stage, self.epochs = stage, epochs

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        print(f"  [{self.stage}] epoch {epoch + 1}/{self.epochs}  loss {logs.get('loss', 0):.4f}  "
              f"acc {logs.get('accuracy', 0):.4f}  val_loss {logs.get('val_loss', 0):.4f}  "
              f"val_acc {logs.get('val_accuracy', 0):.4f}  ({time.perf_counter() - self.t0:.0f} s)",
              file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def train(cfg: Config, splits, callbacks=()) -> tuple[keras.Model, dict]:
    """Build `cfg.train.model` and fit it on the training split, validating on the validation split;
    `callbacks` are extra Keras callbacks (the search reports every epoch through one)."""
    seed_everything(cfg.seed)
    t = cfg.train
    wd = t.weight_decay if t.optimizer == "sgd" else 0.0
    model = models.build(t.model, wd, t.arch)
    train_ds = dataset(splits.x_train, splits.y_train, cfg, training=True)
    val_ds = dataset(splits.x_val, splits.y_val, cfg, training=False)
    steps = math.ceil(len(splits.y_train) / t.batch_size)
    compile_model(model, cfg, steps)
    t0 = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=t.epochs, verbose=0,
                        callbacks=[EpochLog(f"train {t.model}", t.epochs), *callbacks])
    hist = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    hist["seconds"] = time.perf_counter() - t0
    return model, hist


def cache_key(cfg: Config) -> str:
    """What a trained model depends on: seed, data selection, training settings and schedule length."""
    data = {k: v for k, v in cfg.data.__dict__.items() if k not in ("data_dir", "test_limit", "photos_dir")}
    # jit_compile was a TrainConfig field (never set, always False); hashed still, so earlier builds stay valid.
    train = {**dataclasses.asdict(cfg.train), "jit_compile": False}
    return cache.stage_key(cfg.seed, data, train, {"schedule_epochs": schedule_epochs(cfg)},
                           *cache.changed_seeds(cfg, "data"))


def train_or_load(cfg: Config, splits) -> tuple[keras.Model, dict, Path]:
    """Train, or reuse the model cached under build/ for exactly this configuration."""
    return cache.reuse_or_compute(cfg, "train", cache_key(cfg), lambda: train(cfg, splits))


def predict(model: keras.Model, x_uint8: np.ndarray, cfg: Config) -> np.ndarray:
    """Class probabilities of a Keras model on uint8 images."""
    return model.predict(standardize(x_uint8, cfg.data.mean, cfg.data.std), batch_size=1024, verbose=0)
