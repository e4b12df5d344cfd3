"""Plots (PNG) and report.md: what a user reads to decide whether to trust the artifacts."""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.data.fashion_mnist import CLASS_NAMES  # noqa: E402

PLOTS = {
    "samples": "samples.png",
    "curves": "learning_curves.png",
    "confusion": "confusion_matrix.png",
    "predictions": "predictions.png",
}

# Written by the export itself (not by a training run).
PLOTS_EXTRA = {
    "reliability": "reliability.png",
    "contact_sheet": "real_photos_contact_sheet.png",
    "photo_confusion": "real_photos_confusion.png",
}


def _grid(images, titles, colors, path: Path, suptitle: str) -> None:
    fig, axes = plt.subplots(5, 5, figsize=(7.5, 8.2))
    for ax, img, title, color in zip(axes.flat, images, titles, colors):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(title, fontsize=7.5, color=color)
        ax.axis("off")
    fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def sample_grid(x, y, path: Path, seed: int = 0) -> None:
    """A 5x5 grid of training images with their class names."""
    idx = np.random.default_rng(seed).choice(len(y), 25, replace=False)
    _grid(x[idx], [CLASS_NAMES[y[i]] for i in idx], ["black"] * 25, path, "Training samples")


def learning_curves(history: dict, path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        if key in history:
            a.plot(epochs, history[key], marker=".", label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "validation")):
        if key in history:
            b.plot(epochs, history[key], marker=".", label=label)
    a.set(title="Loss", xlabel="epoch")
    b.set(title="Accuracy", xlabel="epoch")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        if len(epochs):
            ax.legend()
        else:               # an imported model exported with --no-prune: nothing was trained in this run
            ax.text(0.5, 0.5, "not trained in this run", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion(y_true, y_pred, n: int = 10) -> np.ndarray:
    """Counts of (true class, predicted class): the one confusion matrix (plotted here, and the real photos'
    in the manifest)."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def confusion_plot(y_true, y_pred, path: Path, title: str = "Confusion matrix (test set)",
                   labels=CLASS_NAMES) -> None:
    m = confusion(y_true, y_pred, len(labels))
    fig, ax = plt.subplots(figsize=(7, 6.2))
    ax.imshow(m, cmap="Blues")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if m[i, j]:
                ax.text(j, i, m[i, j], ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}: {np.trace(m) / max(m.sum(), 1):.2%}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def reliability_plot(curves: dict[str, list], path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, raw and temperature-scaled."""
    fig, ax = plt.subplots(figsize=(5, 4.6))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    for name, pts in curves.items():
        conf, acc, _ = zip(*pts)
        ax.plot(conf, acc, marker="o", label=name)
    ax.set(xlabel="confidence (top score)", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1),
           title="Reliability, int8 TFLite, test set")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def prediction_grid(x, y, probs, path: Path, seed: int = 0) -> None:
    """25 test images with predicted label and confidence: green when right, red when wrong."""
    idx = np.random.default_rng(seed).choice(len(y), 25, replace=False)
    pred = probs.argmax(1)
    titles = [f"{CLASS_NAMES[pred[i]]} {probs[i, pred[i]]:.0%}" + ("" if pred[i] == y[i] else f"\n(is {CLASS_NAMES[y[i]]})")
              for i in idx]
    colors = ["green" if pred[i] == y[i] else "red" for i in idx]
    _grid(x[idx], titles, colors, path, "Predictions on test images")


def training_plots(out_dir: Path, splits, history: dict, test_probs: np.ndarray) -> dict[str, Path]:
    """The four plots of a training run, written into `out_dir`."""
    out_dir = Path(out_dir)
    paths = {k: out_dir / v for k, v in PLOTS.items()}
    sample_grid(splits.x_train, splits.y_train, paths["samples"])
    learning_curves(history, paths["curves"])
    confusion_plot(splits.y_test, test_probs.argmax(1), paths["confusion"])
    prediction_grid(splits.x_test, splits.y_test, test_probs, paths["predictions"])
    return paths


def _pct(v) -> str:
    return "–" if v is None else f"{v:.2%}"


def _before_pruning(manifest: dict) -> str:
    """Where the unpruned model stands: pruning carries on its schedule, so it is not at lr 0 yet."""
    c = manifest["config"]
    if not c["prune"]["enabled"]:
        return ""
    if "import" in manifest:
        return ": as imported"
    return f": epoch {c['train']['epochs']} of the {c['train']['epochs'] + c['prune']['epochs']}-epoch schedule"


def write_report(out_dir: Path, manifest: dict, plots: dict[str, Path]) -> Path:
    """exported/report.md: size/accuracy table, parity of every artifact, gate, plots."""
    arts = {a["file"]: a for a in manifest["artifacts"]}
    ref = manifest["float_reference"]
    pr = manifest["pruning"]
    unpruned = manifest["sizes"]["unpruned_float_tflite"]
    i8 = arts["model_int8.tflite"]
    fl = arts["model_float.tflite"]
    adapted = ", adapted on real photos" if manifest.get("photos_train") else ""
    imp = manifest.get("import")
    model = (f"`{imp['file']}` (imported: {imp['format_description']}, saved by {imp['saved_by']})" if imp else
             f"`{manifest['config']['train']['model']}`")
    lines = [
        "# fashion-edge export report", "",
        f"Created {manifest['created']} from commit `{manifest['git_commit']}`, seed {manifest['seed']}, "
        f"profile `{manifest['config']['profile']}`, model {model} "
        f"({ref['params']:,} parameters, {_macs(ref['macs'])} MACs per image). "
        f"All accuracies are on the official {manifest['test_images']:,} Fashion-MNIST test images.", "",
        *(import_sections(manifest) if imp else []),
        "## Float vs pruned vs int8", "",
        "| model | accuracy | size (bytes) | gzip size (bytes) |", "|---|---:|---:|---:|",
        f"| float (before pruning{_before_pruning(manifest)}, TFLite float32) | {_pct(ref['unpruned_accuracy'])} | {unpruned['bytes']:,} | {unpruned['gzip_bytes']:,} |",
        f"| pruned{adapted} float (TFLite float32) | {_pct(fl['accuracy'])} | {fl['bytes']:,} | {fl['gzip_bytes']:,} |",
        f"| pruned{adapted} int8 (TFLite full-integer) | {_pct(i8['accuracy'])} | {i8['bytes']:,} | {i8['gzip_bytes']:,} |", "",
        f"Pruning: target sparsity {pr['target_sparsity']:.0%}, measured kernel sparsity {pr['measured_sparsity']:.1%}; "
        f"gzip size of the float32 kernels {pr.get('kernel_gzip_bytes_before', 0):,} → {pr.get('kernel_gzip_bytes_after', 0):,} bytes. "
        "Zeros do not shrink a flatbuffer; they shrink what is compressed.", "",
        "## Parity of every artifact, each in its own runtime", "",
        f"Reference: {ref['what']} ({_pct(ref['accuracy'])}). LiteRT runs the `.tflite` files, onnxruntime the `.onnx` "
        "files, both through `edge_runtime` exactly as on the device.", "",
        "Every `.tflite` runs twice: on LiteRT's default kernels (the XNNPACK delegate) and on TFLite's built-in "
        "reference kernels (what tflite-runtime runs); their int8 arithmetic rounds differently, so both counts "
        "are given and both are gated. `model_int8_rgb.tflite` (MediaPipe-ready) is fed the gray test images as "
        "uint8 RGB.", "",
        "| artifact | bytes | gzip | input | accuracy | correct (default / reference kernels) | agreement with float | sha256 |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for a in manifest["artifacts"]:
        inp = a["input"]
        q = f"{inp['dtype']}" + (f" (scale {inp['scale']:.5f}, zp {inp['zero_point']})" if "scale" in inp else "")
        k = a.get("kernels")
        counts = (f"{k['default']['correct']:,} / {k['reference']['correct']:,}" if k
                  else f"{a['correct']:,}" if "correct" in a else "–")
        lines.append(f"| `{a['file']}` | {a['bytes']:,} | {a['gzip_bytes']:,} | {q} | {_pct(a['accuracy'])} | "
                     f"{counts} | {_pct(a['agreement_with_float'])} | `{a['sha256'][:12]}…` |")
    g = manifest["gate"]
    lines += ["", f"**Gate** (accuracy drop ≤ {g['max_drop_pp']} pp and agreement ≥ {g['min_agreement']:.0%} "
                  f"for every artifact): {'PASSED' if g['passed'] else 'FAILED'}."]
    lines += [f"- {f}" for f in g["failures"]]
    o = manifest["onnx_int8"]
    lines += ["", "## Which int8 ONNX", "",
              f"Two ways to an int8 ONNX were built and measured on the validation split (not the test set); "
              f"shipped: **{o['chosen']}** ({o['why']}).", "",
              "| candidate | validation agreement with float | validation accuracy |", "|---|---:|---:|"]
    for name, c in o["candidates"].items():
        lines.append(f"| {name} | {_pct(c['val_agreement'])} | {_pct(c['val_accuracy'])} |")
    lines += ["", "## Per-class accuracy (int8 TFLite)", "",
              "| " + " | ".join(manifest["labels"]) + " |", "|" + "---:|" * len(manifest["labels"]),
              "| " + " | ".join(_pct(v) for v in i8["per_class_accuracy"]) + " |", ""]
    lines += ["## Confidence: temperature scaling", "",
              "Each artifact's scores are rescaled by a temperature T fitted on the validation split "
              "(never the test set or the photos); `edge_runtime` applies it from this manifest. ECE = expected "
              "calibration error over 15 confidence bins, on the test set. `edge-classify --threshold P` answers "
              "\"unsure\" when the calibrated top score is below P.", "",
              "| artifact | T | test ECE raw | test ECE calibrated | test NLL raw | test NLL calibrated |",
              "|---|---:|---:|---:|---:|---:|"]
    for a in manifest["artifacts"]:
        c = a.get("calibration")
        if c:
            lines.append(f"| `{a['file']}` | {c['temperature']:.3f} | {_pct(c['test_ece_before'])} | "
                         f"{_pct(c['test_ece_after'])} | {c['test_nll_before']:.4f} | {c['test_nll_after']:.4f} |")
    lines += [""]
    if manifest.get("photos_train"):
        lines += photos_train_section(manifest["photos_train"], ref["accuracy"])
    if manifest.get("real_photos"):
        lines += real_photos_section(manifest["real_photos"], manifest["labels"])
    if manifest.get("mcu"):
        lines += mcu_section(manifest["mcu"])
    for file in SECTIONS:
        if (Path(out_dir) / file).exists():
            lines += [section(file, (Path(out_dir) / file).read_text().strip()), ""]
    lines += ["## Plots", ""]
    titles = {"samples": "Training samples",
              "curves": "Learning curves (the pruning fine-tune)" if imp else "Learning curves (training run)",
              "confusion": "Confusion matrix of the pruned float model on the test set",
              "predictions": "Predictions on test images (green right, red wrong)",
              "reliability": "Reliability diagram (int8 TFLite, test set)"}
    for key, path in plots.items():
        lines += [f"### {titles[key]}", "", f"![{titles[key]}]({Path(path).name})", ""]
    lines += ["## Tools", "", ", ".join(f"{k} {v}" for k, v in manifest["tools"].items()), ""]
    path = Path(out_dir) / "report.md"
    path.write_text("\n".join(lines))
    return path


def _macs(n) -> str:
    return "–" if not n else f"{n / 1e6:.2f} M"


def import_sections(manifest: dict) -> list[str]:
    """The imported model: how it was read and proven, and what its device version costs."""
    imp, c = manifest["import"], manifest["config"]
    p, n = imp["proof"], imp["normalization"]
    pruning = (f"pruned to {c['prune']['target_sparsity']:.0%} sparsity over {c['prune']['epochs']} epochs of Adam "
               f"fine-tuning on Fashion-MNIST (learning rate {c['train']['lr']:g} on a cosine to 0)"
               if c["prune"]["enabled"] else "not pruned (--no-prune)")
    how = (f"rebuilt layer by layer in tf_keras and proven equal to the file on {p['images']:,} test images: largest "
           f"absolute output difference {p['max_abs_diff']:.2e}, every top-1 answer the same"
           if imp["rebuilt"] else
           f"wrapped as it is (not rebuilt; largest output difference {p['max_abs_diff']:.2e} on {p['images']:,} test images)")
    lines = ["## Your model", "",
             f"`{imp['file']}` ({imp['bytes']:,} bytes, sha256 `{imp['sha256'][:12]}…`, {imp['format_description']}, "
             f"saved by {imp['saved_by']}): input {tuple(imp['input_shape'])}, {imp['outputs']} out (last layer "
             f"{imp['last_layer']}){'; a Softmax was appended so every artifact gives probabilities' if imp['softmax_appended'] else ''}. "
             f"Normalization: {n['how']}, i.e. input = (pixel/255 − {n['mean']:g}) / {n['std']:g}, in the manifest "
             "and in every artifact's metadata.", "",
             f"Float accuracy of the file as it is: **{_pct(imp['float_accuracy'])}**. It was {how}"
             + (f"; left out as the identity at inference: {', '.join(imp['dropped_layers'])}" if imp["dropped_layers"] else "")
             + f"; then {pruning}.", ""]
    rows = manifest.get("device_cost")
    if rows:
        lines += ["## What the device version costs", "",
                  "Each model through `edge_runtime` (LiteRT) on the same test images; latency = median batch-1 call "
                  "(normalize, quantize, invoke, dequantize), one thread, all timed round-robin in this run on the "
                  "machine that exported.", "",
                  "| model | accuracy | size (bytes) | gzip (bytes) | MACs | batch-1 latency (µs) |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            lines.append(f"| {r['row']} | {_pct(r['accuracy'])} | {r['bytes']:,} | {r.get('gzip_bytes', 0):,} | "
                         f"{_macs(r.get('macs'))} | {r['latency_us']:.0f} |")
        lines.append("")
    return lines


def mcu_section(mcu: dict) -> list[str]:
    """"On a microcontroller": the int8 model in TensorFlow Lite Micro, its memory and the boards it fits."""
    lines = ["## On a microcontroller", ""]
    ops = ", ".join(f"{op} ×{n}" for op, n in mcu["ops"].items())
    if "arena_bytes" not in mcu:   # TFLM could not run it at all
        return lines + [f"**Not for microcontrollers:** {mcu['why_not']} (tflite-micro {mcu['tflite_micro']}). "
                        f"The model's ops: {ops}. The Raspberry Pi artifacts are unaffected.", ""]
    a, b = mcu["agreement"], mcu["arena_breakdown"]
    same = ("every int8 output vector is identical" if a["outputs_differ"] == 0 else
            f"{a['outputs_differ']:,} of the {a['images']:,} int8 output vectors "
            f"{'differs' if a['outputs_differ'] == 1 else 'differ'} somewhere (by at most "
            f"{a['max_abs_output_diff']} step{'s' if a['max_abs_output_diff'] != 1 else ''})")
    lines += [f"`{mcu['model']}` in TensorFlow Lite Micro's own interpreter (tflite-micro {mcu['tflite_micro']}, the "
              f"reference kernels an MCU build starts from), one image at a time on the {a['images']:,} test images: "
              f"**accuracy {_pct(a['accuracy'])}**; LiteRT's built-in kernels on the same int8 inputs "
              f"{_pct(a['reference_accuracy'])}. Top-1 agreement {a['top1_agreement']:.2%} "
              f"({a['top1_differ']} answers differ; gate ≥ {mcu['min_agreement']:.1%}); {same}. "
              f"{a['tflm_ms_per_image']} ms per image on the exporting machine's x86 core (not a board's figure).", "",
              f"Memory: the smallest arena that allocates is **{mcu['arena_bytes']:,} bytes** (the recording "
              f"allocator: {b['head']:,} head, the planned tensors, + {b['tail']:,} tail, persistent); reserve "
              f"{mcu['arena_reserve_bytes']:,} (+10 %, whole KiB). Flash: **{mcu['flash_bytes']:,} bytes**, "
              f"{mcu['flash_what']} (the model itself is {mcu['model_bytes']:,}), plus the TFLM library and kernels. "
              f"Ops: {ops}.", ""]
    if mcu.get("fits"):
        lines += [f"Fits = the reserved arena and the model each take at most {mcu['app_share']:.0%} of the board's "
                  "RAM and flash, the rest left to the application (board figures: vendor datasheets).", "",
                  "| board | MCU | RAM | flash | reserved arena / RAM | model / flash | fits |", "|---|---|---:|---:|---:|---:|:---:|"]
        for r in mcu["fits"]:
            lines.append(f"| {r['board']} | {r['mcu']} | {r['ram_bytes'] // 1024} KB | {r['flash_bytes'] // 1024} KB | "
                         f"{r['arena_share_of_ram']:.0%} | {r['model_share_of_flash']:.0%} | "
                         f"{'yes' if r['fits'] else 'no'} |")
        lines.append("")
    if mcu["for_microcontrollers"]:
        lines += [f"C source for a TFLite Micro project in `{mcu['source']}`: `model_data.cc/.h`, `model_settings.h`, "
                  "`op_resolver.h`, `preprocess.c/.h`. Compiled and checked on the host (the array equals the "
                  ".tflite; the C preprocessing equals edge_runtime's); not built for or run on a board here.", ""]
    else:
        lines += [f"**Not for microcontrollers:** {mcu['why_not']}.", ""]
    return lines


def photos_train_section(p: dict, after: float) -> list[str]:
    counts = ", ".join(f"{name} {n}" for name, n in p["per_class"].items())
    lines = ["## Adapted on real photos", "",
             f"After pruning, the model was fine-tuned for {p['epochs']} epochs (peak lr {p['lr']}, pruning masks kept) on "
             f"Fashion-MNIST batches of which {p['share']:.0%} were real phone photos from `{p['folder']}`: "
             f"{p['photos']} photos from {p['senders']} senders ({counts}; manifest sha256 `{p['manifest_sha256'][:12]}…`), "
             f"each in {p['variants_per_photo']} variants (augmented as photos, then converted by `edge_runtime` exactly as "
             f"on the device), drawn class-balanced (count^{p['balance']}).", ""]
    if "fashion_mnist_only_test_accuracy" in p:
        lines += [f"Fashion-MNIST test accuracy of the float model before → after adapting: "
                  f"{_pct(p['fashion_mnist_only_test_accuracy'])} → {_pct(after)}. The adapt settings were chosen "
                  "with the dev photos below in view, and some senders have photos in both sets: the dev figure is "
                  "optimistic; the sender-grouped figures are in \"Real photos: sender-grouped cross-validation\".", ""]
    return lines


def real_photos_section(r: dict, labels: list[str]) -> list[str]:
    lines = ["## Real phone photos", "",
             f"`{r['model']}` through `edge_runtime` (photo conversion with foreground cut-out) on "
             f"{r['photos']} phone photos of clothes (`{Path(r['folder']).name}`, CC0; never trained or "
             f"calibrated on): **top-1 {_pct(r['accuracy'])}** ({r['correct']}/{r['photos']}). The cut-out's "
             "settings were chosen on the training pool and, where it could not tell them apart, on these photos, so "
             "the figure is optimistic, and the set is small and uneven: read the per-class figures as rough.", "",
             "| class | photos | correct | accuracy |", "|---|---:|---:|---:|"]
    before = r.get("fashion_mnist_only")
    if before:
        lines[-2:] = ["| class | photos | Fashion-MNIST only | adapted on real photos (shipped) |", "|---|---:|---:|---:|"]
        for c, v in sorted(r["per_class"].items(), key=lambda kv: int(kv[0])):
            b = before["per_class"][c] if c in before["per_class"] else before["per_class"][str(c)]
            lines.append(f"| {labels[int(c)]} | {v['photos']} | {b['correct']} ({_pct(b['correct'] / v['photos'])}) | "
                         f"{v['correct']} ({_pct(v['correct'] / v['photos'])}) |")
        lines.append(f"| **all** | {r['photos']} | **{before['correct']} ({_pct(before['accuracy'])})** | "
                     f"**{r['correct']} ({_pct(r['accuracy'])})** |")
    else:
        for c, v in sorted(r["per_class"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {labels[int(c)]} | {v['photos']} | {v['correct']} | {_pct(v['correct'] / v['photos'])} |")
    lines += ["", "With a confidence threshold (calibrated scores), on the same photos:", "",
              "| --threshold | answered | accuracy when answered |", "|---:|---:|---:|"]
    for t in r["thresholds"]:
        acc = t["correct_when_answered"] / t["answered"] if t["answered"] else None
        lines.append(f"| {t['threshold']} | {t['answered']}/{r['photos']} | {_pct(acc)} |")
    lines += ["", f"![Confusion matrix on real photos]({PLOTS_EXTRA['photo_confusion']})", "",
              "Contact sheet: each photo, the 28×28 image the model saw, its answer (green right, red wrong):", "",
              f"![Contact sheet]({PLOTS_EXTRA['contact_sheet']})", ""]
    return lines


COMPARISON_FILE = "comparison.md"
PHOTO_FOLDS_FILE = "photo_folds.md"
# Sections measured by their own commands (`compare`, `compare --photo-folds`): kept beside the release as
# files and in its report.md until re-run. file → title.
SECTIONS = {COMPARISON_FILE: "Model comparison", PHOTO_FOLDS_FILE: "Real photos: sender-grouped cross-validation"}


def _markers(file: str) -> tuple[str, str]:
    key = "comparison" if file == COMPARISON_FILE else Path(file).stem
    return f"<!-- {key}:begin -->", f"<!-- {key}:end -->"


def section(file: str, text: str) -> str:
    begin, end = _markers(file)
    return f"{begin}\n## {SECTIONS[file]}\n\n{text}\n{end}"


def copy_sections(release: Path, out: Path) -> None:
    """Carry the measured sections of the release in `release` over to the new one in `out`."""
    for file in SECTIONS:
        if (Path(release) / file).exists():
            shutil.copy(Path(release) / file, Path(out) / file)


def set_section(export_dir: Path, file: str, text: str) -> None:
    """Keep a measured section beside the release (`file`) and in its report.md, replacing an older one."""
    export_dir = Path(export_dir)
    (export_dir / file).write_text(text + "\n")
    report = export_dir / "report.md"
    if not report.exists():
        return
    body = report.read_text()
    begin, end = _markers(file)
    if begin in body:
        head, rest = body.split(begin, 1)
        body = head + section(file, text) + rest.split(end, 1)[1]
    else:
        body = body.replace("## Plots", section(file, text) + "\n\n## Plots", 1)
    report.write_text(body)


def set_comparison(export_dir: Path, text: str) -> None:
    """Keep the comparison table beside the release and in its report.md (replacing an older one)."""
    set_section(export_dir, COMPARISON_FILE, text)
