"""Adapt: a short fine-tune of the pruned model on real photos mixed into Fashion-MNIST batches.

The photos (pipeline/train/photo_variants.py: augmented, converted by the runtime, cached) fill a share of
every batch, drawn class-balanced; the rest is Fashion-MNIST, so the model keeps what it knew. The
pruning masks stay fixed (zeros are put back after every step), the learning rate decays from
`photos_train.lr` to 0 on a cosine. Fashion-MNIST-only training stays a cached stage of its own:
the model before this step is the Fashion-MNIST-only model the report compares against.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

from pipeline.train import augment
from pipeline.train import photo_variants
from pipeline.train import fit as training
from pipeline.config import Config
from pipeline.train import cache
from pipeline.train.prune import PRUNABLE, kernel_sparsity


class KeepZeros(keras.callbacks.Callback):
    """Puts the pruned weights back to zero after every step: the sparsity pruning paid for stays."""

    def __init__(self, model: keras.Model):
        super().__init__()
        self.pairs = [(layer.kernel, tf.constant(layer.kernel.numpy() != 0, layer.kernel.dtype))
                      for layer in model.layers if isinstance(layer, PRUNABLE)]

    def on_train_batch_end(self, batch, logs=None):
        for kernel, mask in self.pairs:
            kernel.assign(kernel * mask)


def mixed_dataset(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray, weights: np.ndarray,
                  cfg: Config) -> tuple[tf.data.Dataset, int]:
    """Batches of `batch_size`: a `share` of photo variants drawn by `weights`, the rest Fashion-MNIST in a
    shuffled order, both with the recipe's shift-and-flip. Returns the dataset and its steps per epoch."""
    b = cfg.train.batch_size
    n_photo = max(1, round(b * cfg.photos_train.share))
    n_fm = b - n_photo
    steps = math.ceil(len(y) / n_fm)
    xs, ys = tf.constant(x[..., None]), tf.constant(np.eye(10, dtype=np.float32)[y])
    pxs, pys = tf.constant(px[..., None]), tf.constant(py.astype(np.int64))
    logits = tf.constant(np.log(np.maximum(weights, 1e-12))[None], tf.float32)
    mean, std = cfg.data.mean, cfg.data.std
    options = tf.data.Options()
    options.autotune.enabled = False       # see train.dataset: its thread stalls epoch boundaries
    fm = tf.data.Dataset.range(len(y)).shuffle(len(y), seed=cfg.seed, reshuffle_each_iteration=True).repeat()

    def batch(i):
        j = tf.random.categorical(logits, n_photo, dtype=tf.int64)[0]
        img = tf.concat([tf.gather(xs, i), tf.gather(pxs, j)], 0)
        img = augment.shift_and_flip(tf.cast(img, tf.float32) / 255.0)
        label = tf.concat([tf.gather(ys, i), tf.one_hot(tf.gather(pys, j), 10)], 0)
        return (img - mean) / std, label
    ds = fm.batch(n_fm, drop_remainder=True).map(batch, num_parallel_calls=2, deterministic=True)
    return ds.prefetch(2).with_options(options), steps


def adapt(pruned: keras.Model, cfg: Config, splits, photos: photo_variants.PhotoSet,
          keep: np.ndarray | None = None) -> tuple[keras.Model, dict]:
    """Fine-tune a copy of `pruned` on Fashion-MNIST batches with real-photo variants mixed in (only
    those of the photos flagged in `keep`, if given: the variants are made and cached for the whole set)."""
    a = cfg.photos_train
    training.seed_everything(cfg.seed + cfg.seeds.adapt)
    px, py, source = photo_variants.variants(photos, a.variants, cfg.seed, Path(cfg.build_dir))
    if keep is not None:
        px, py = px[keep[source]], py[keep[source]]
    if a.footwear_pairs:
        from pipeline.train import footwear_pairs
        sx, sy = footwear_pairs.synthesize(splits.x_train, splits.y_train, a.footwear_pairs,
                                            cfg.seed + cfg.seeds.footwear_pairs)
        px, py = np.concatenate([px, sx]), np.concatenate([py, sy])
    weights = photo_variants.balanced_weights(py, a.balance)
    model = keras.models.clone_model(pruned)
    model.set_weights(pruned.get_weights())
    if a.freeze_bn:         # frozen batch norm runs in inference mode: its statistics stay Fashion-MNIST's
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    ds, steps = mixed_dataset(splits.x_train, splits.y_train, px, py, weights, cfg)
    schedule = training.WarmupCosine(a.lr, 0, a.epochs * steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=cfg.train.momentum, nesterov=True),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
                  metrics=["accuracy"])
    history = model.fit(ds, steps_per_epoch=steps, epochs=a.epochs, verbose=0,
                        validation_data=training.dataset(splits.x_val, splits.y_val, cfg, training=False),
                        callbacks=[KeepZeros(model), training.EpochLog("adapt", a.epochs)])
    info = {"photos": int(len(photos.paths) if keep is None else keep.sum()), "variants_per_photo": a.variants + 1, "photo_images": int(len(py)),
            "share": a.share, "balance": a.balance, "footwear_pairs": a.footwear_pairs, "epochs": a.epochs, "lr": a.lr, "freeze_bn": a.freeze_bn,
            "measured_sparsity": round(kernel_sparsity(model), 4),
            "history": {k: [float(v) for v in vs] for k, vs in history.history.items()}}
    return model, info


def adapt_or_load(pruned: keras.Model, cfg: Config, splits, photos: photo_variants.PhotoSet,
                  prune_key: str) -> tuple[keras.Model, dict]:
    """Adapt, or reuse the model cached under build/ for this pruned model, photo set and settings."""
    key = cache.stage_key(prune_key, cfg.photos_train, photos.manifest_sha256, len(photos.paths),
                          photo_variants._conversion_digest(), *cache.changed_seeds(cfg, "adapt", "footwear_pairs"))
    model, info, _ = cache.reuse_or_compute(cfg, "adapt", key, lambda: adapt(pruned, cfg, splits, photos))
    return model, info


def sender_folds(cfg: Config, splits, pruned: keras.Model, photos: photo_variants.PhotoSet, k: int = 5,
                 log=print) -> dict:
    """Sender-grouped k-fold figure on the training photos: every fold adapts on the photos of the other
    folds' senders and is measured, as the int8 TFLite model through edge_runtime, on its own held-out
    senders' photos, next to the Fashion-MNIST-only model on the same photos. No sender is in two folds."""
    import tempfile
    import zlib

    from pipeline.evaluate import real_photos as photo_eval
    from pipeline.quantize import representative, tflite
    from pipeline.data.fashion_mnist import CLASS_NAMES

    folds = np.array([zlib.crc32(s.encode()) % k for s in photos.senders])
    y = photos.labels
    pred = {"before": np.full(len(y), -1), "after": np.full(len(y), -1)}
    calib = representative.calibration_images(cfg, splits)
    with tempfile.TemporaryDirectory(prefix="sender-folds-") as tmp:
        tmp = Path(tmp)
        photo_eval.write_minimal_manifest(tmp, cfg)
        before = tmp / "before.tflite"
        before.write_bytes(tflite.to_tflite_int8(pruned, calib))
        for f in range(k):
            held = folds == f
            if not held.any():
                continue
            log(f"fold {f + 1}/{k}: adapting on {int((~held).sum())} photos, holding out {int(held.sum())} "
                f"from {len({s for s, h in zip(photos.senders, held) if h})} senders")
            model, _ = adapt(pruned, cfg, splits, photos, keep=~held)
            after = tmp / f"fold{f}.tflite"
            after.write_bytes(tflite.to_tflite_int8(model, calib))
            paths = [p for p, h in zip(photos.paths, held) if h]
            for name, path in (("before", before), ("after", after)):
                pred[name][held] = photo_eval.evaluate_paths(path, paths, y[held], verify=False)["_pred"]
        disjoint = _sender_disjoint_dev(cfg, splits, pruned, photos, calib, tmp, before, log)
    ok = {name: p == y for name, p in pred.items()}
    classes = sorted(set(y.tolist()))
    return {"sender_disjoint_dev": disjoint, "k": k, "photos": int(len(y)), "senders": len(set(photos.senders)), "folder": photos.folder.name,
            "correct_before": int(ok["before"].sum()), "correct_after": int(ok["after"].sum()),
            "balanced_before": round(float(np.mean([ok["before"][y == c].mean() for c in classes])), 4),
            "balanced_after": round(float(np.mean([ok["after"][y == c].mean() for c in classes])), 4),
            "per_class": {CLASS_NAMES[c]: {"photos": int((y == c).sum()), "before": int(ok["before"][y == c].sum()),
                                           "after": int(ok["after"][y == c].sum())} for c in classes},
            "settings": {k_: v for k_, v in cfg.photos_train.__dict__.items()}}


def _sender_disjoint_dev(cfg: Config, splits, pruned, photos, calib, tmp: Path, before: Path, log) -> dict | None:
    """Adapted without the training photos of anyone who also sent a dev photo, measured on the dev set: the
    figure a dev result is optimistic against when senders are shared."""
    from pipeline.evaluate import real_photos as photo_eval
    from pipeline.quantize import tflite
    dev = photo_eval.find_dev_set(cfg.data.photos_dir, cfg.search.photos_dev)
    if dev is None or not (dev / "MANIFEST.tsv").is_file():
        return None
    keep = ~np.isin(photos.senders, [s for s in photo_variants.read(dev).senders if not s.startswith("file:")])
    log(f"sender-disjoint: adapting on {int(keep.sum())} of {len(keep)} photos (none from a dev sender), "
        f"measuring on {dev.name}")
    model, _ = adapt(pruned, cfg, splits, photos, keep=keep)
    after = tmp / "disjoint.tflite"
    after.write_bytes(tflite.to_tflite_int8(model, calib))
    r = {name: photo_eval.evaluate(path, dev, verify=False) for name, path in (("before", before), ("after", after))}
    return {"folder": dev.name, "photos": r["after"]["photos"], "training_photos": int(keep.sum()),
            "correct_before": r["before"]["correct"], "correct_after": r["after"]["correct"]}


def folds_table(r: dict) -> str:
    """The sender-grouped figure as the markdown the report shows."""
    lines = [f"Sender-grouped {r['k']}-fold cross-validation on `{r['folder']}` ({r['photos']} photos, {r['senders']} "
             "senders; each fold adapts on the other folds' senders and is measured on its own, int8 TFLite through "
             "`edge_runtime`). Adapt settings: " + ", ".join(f"{k} {v}" for k, v in r["settings"].items()
                                                                if k in ("share", "epochs", "lr", "variants", "balance")) + ".",
             "", "| class | photos | Fashion-MNIST only | adapted |", "|---|---:|---:|---:|"]
    for name, c in r["per_class"].items():
        lines.append(f"| {name} | {c['photos']} | {c['before']} | {c['after']} |")
    lines.append(f"| **all** (balanced accuracy) | {r['photos']} | **{r['correct_before']}** "
                 f"({r['balanced_before']:.1%}) | **{r['correct_after']}** ({r['balanced_after']:.1%}) |")
    d = r.get("sender_disjoint_dev")
    if d:
        lines += ["", f"Sender-disjoint dev figure: adapted on the {d['training_photos']} training photos whose senders sent "
                      f"no `{d['folder']}` photo, the int8 model gets **{d['correct_after']}/{d['photos']}** "
                      f"({d['correct_after'] / d['photos']:.1%}) of `{d['folder']}` right (Fashion-MNIST only: "
                      f"{d['correct_before']}/{d['photos']}). The release's own dev figure, adapted on all the training "
                      "photos, shares senders with the dev set and is optimistic against this one."]
    return "\n".join(lines)
