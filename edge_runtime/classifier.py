"""Classifier: load a model and the manifest beside it, quantize the input, dequantize the output, top-k."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from . import model_metadata
from .backends import Backend, OnnxBackend, load_backend
from .decode import load_image
from .errors import EdgeError
from .labels import FASHION_MNIST_LABELS
from .preprocess import is_dataset_style, normalize, to_model_input
from .quant import QuantParams, dequantize, quantize, softmax, temperature_scale

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1

ImageLike = str | os.PathLike | Image.Image | np.ndarray

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"edge_runtime: warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class Prediction:
    """One ranked answer: the label, its index in the label list, and the model's score (0..1)."""

    label: str
    index: int
    score: float


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: str | Path) -> dict:
    """Parse and sanity-check an exported manifest.json (schema in docs/architecture.md)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"{path}: cannot read manifest ({e})") from e
    except json.JSONDecodeError as e:
        raise EdgeError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise EdgeError(f"{path}: expected a JSON object at the top level")
    schema = manifest.get("schema")
    if schema != MANIFEST_SCHEMA:
        raise EdgeError(f"{path}: manifest schema {schema!r} is not supported (this runtime reads {MANIFEST_SCHEMA})")
    labels = manifest.get("labels")
    if labels is not None and not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise EdgeError(f"{path}: 'labels' must be a non-empty list of strings")
    norm = manifest.get("input", {}).get("normalization", {})
    for key in ("mean", "std"):
        if key in norm and not isinstance(norm[key], (int, float)):
            raise EdgeError(f"{path}: input.normalization.{key} must be a number, got {norm[key]!r}")
    if "std" in norm and not norm["std"] > 0:
        raise EdgeError(f"{path}: input.normalization.std must be positive, got {norm['std']}")
    if not isinstance(manifest.get("artifacts", []), list):
        raise EdgeError(f"{path}: 'artifacts' must be a list")
    return manifest


class Classifier:
    """A Fashion-MNIST classifier around one .tflite or .onnx model file.

    Labels and normalization come from manifest.json beside the model; its sha256 for the model file
    is checked before the model is parsed (verify=False skips that). Without a manifest they come from
    the model file's own metadata (TFLite Metadata, ONNX metadata_props). Not thread-safe: use one
    Classifier per thread.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        labels: Sequence[str] | None = None,
        num_threads: int = 1,
        verify: bool = True,
        *,
        apply_softmax: bool = False,
        calibrated: bool = True,
        reference_kernels: bool = False,
        manifest: dict | None = None,
    ) -> None:
        # apply_softmax: the exported models end in softmax and output probabilities; set it only for
        # a model whose last layer outputs logits. calibrated: apply the temperature the manifest gives
        # for this file (fitted on the validation split at export), so a score of 0.8 is right ~80 %
        # of the time on test images; False gives the model's raw scores. manifest: use this manifest
        # instead of the manifest.json beside the model (the pipeline's, before it is written).
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EdgeError(f"{self.model_path}: model file not found")
        self.apply_softmax = apply_softmax
        manifest_path = self.model_path.parent / MANIFEST_NAME
        if manifest is None:
            manifest = read_manifest(manifest_path) if manifest_path.is_file() else None
        self.manifest: dict | None = manifest
        self.artifact: dict | None = self._find_artifact(manifest_path, verify)
        if verify:
            self._verify_checksum(manifest_path)
        self.backend: Backend = load_backend(self.model_path, num_threads=num_threads,
                                             reference_kernels=reference_kernels)

        if self.manifest is not None:
            manifest = self.manifest
        else:       # one model file copied alone: what it says about itself
            manifest = self._from_model_file(labels is not None)
        self.labels: tuple[str, ...] = tuple(labels or manifest.get("labels") or FASHION_MNIST_LABELS)
        norm = manifest.get("input", {}).get("normalization", {})
        self.mean = float(norm.get("mean", 0.0))
        self.std = float(norm.get("std", 1.0))
        self.input_quant = self._quant("input", self.backend.input_dtype, self.backend.input_quant)
        self.output_quant = self._quant("output", self.backend.output_dtype, self.backend.output_quant)
        calibration = (self.artifact or {}).get("calibration") or {}
        self.temperature = float(calibration.get("temperature", 1.0)) if calibrated else 1.0
        if not self.temperature > 0:
            raise EdgeError(f"{manifest_path}: temperature for {self.model_path.name} must be positive")

        n_out = int(np.prod([d for d in self.backend.output_shape[1:] if d is not None]))
        if n_out != len(self.labels):
            raise EdgeError(f"{self.model_path}: model has {n_out} outputs but there are {len(self.labels)} labels")

    def _from_model_file(self, have_labels: bool) -> dict:
        """Labels and normalization from the model's metadata, in the manifest's shape; warns about
        whatever the file does not give."""
        if isinstance(self.backend, OnnxBackend):
            info = model_metadata.read_onnx(self.backend.metadata_props, self.model_path)
        else:
            info = model_metadata.read_tflite(self.model_path)
        missing = []
        if info.mean is None or info.std is None:
            missing.append("normalization mean 0, std 1")
        if info.labels is None and not have_labels:
            missing.append("the ten Fashion-MNIST labels")
        if missing:
            _warn_once(f"no {MANIFEST_NAME} beside {self.model_path} and no metadata in it; assuming "
                       + " and ".join(missing))
        if info.std is not None and not info.std > 0:
            raise EdgeError(f"{self.model_path}: the model's metadata gives normalization std {info.std}")
        norm = {} if info.mean is None or info.std is None else {"mean": info.mean, "std": info.std}
        return {"labels": list(info.labels) if info.labels else None, "input": {"normalization": norm}}

    def _find_artifact(self, manifest_path: Path, verify: bool) -> dict | None:
        if self.manifest is None:
            return None
        for entry in self.manifest.get("artifacts", []):
            if isinstance(entry, dict) and entry.get("file") == self.model_path.name:
                return entry
        if verify:
            _warn_once(f"{manifest_path} does not list {self.model_path.name}; its checksum cannot be verified")
        return None

    def _verify_checksum(self, manifest_path: Path) -> None:
        expected = (self.artifact or {}).get("sha256")
        if not expected:
            return
        actual = file_sha256(self.model_path)
        if actual != str(expected).lower():
            raise EdgeError(
                f"{self.model_path}: sha256 {actual[:16]}… does not match {manifest_path} "
                f"({str(expected)[:16]}…); the file is corrupt or the manifest is stale: re-export, "
                "or load anyway with verify=False (--no-verify)"
            )

    def _quant(self, which: str, dtype: type, from_model: QuantParams | None) -> QuantParams | None:
        """The model's own quantization parameters; for a quantized ONNX model without them in its
        metadata, the manifest's entry for this file."""
        if dtype == np.float32 or from_model is not None:
            return from_model
        entry = (self.artifact or {}).get(which, {})
        if isinstance(entry, dict) and "scale" in entry and "zero_point" in entry and entry["scale"] > 0:
            return float(entry["scale"]), int(entry["zero_point"])
        raise EdgeError(
            f"{self.model_path}: {which} is {np.dtype(dtype).name} but neither the model metadata "
            f"({which}_scale, {which}_zero_point) nor {MANIFEST_NAME} gives its quantization parameters"
        )

    def scores(self, images_uint8: np.ndarray, photos: bool | Sequence[bool] | np.ndarray = False) -> np.ndarray:
        """(N, 28, 28) uint8 model-ready images → (N, classes) float32 scores (probabilities).

        Rows flagged in `photos` (True: all) were converted from photos: their scores are the mean over
        the image and its left-right mirror. The model was trained with flips, so both are fair views;
        on real photos the mean is steadier (report.md). Dataset-style images are scored as they are."""
        images = np.asarray(images_uint8)
        images = images[None] if images.ndim == 2 else images
        flags = np.broadcast_to(np.asarray(photos, dtype=bool), (len(images),))
        probs = self._raw_scores(images)
        if flags.any():
            probs[flags] = 0.5 * (probs[flags] + self._raw_scores(images[flags][:, :, ::-1]))
        return temperature_scale(probs, self.temperature)

    def _raw_scores(self, images_uint8: np.ndarray) -> np.ndarray:
        """The model's own probabilities, before temperature scaling."""
        x = normalize(images_uint8, self.mean, self.std)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        if self.input_quant is not None:
            x = quantize(x, self.input_quant, self.backend.input_dtype)
        raw = self.backend.run(x)
        if raw.size != n * len(self.labels):     # a corrupt file can declare one output shape and give another
            raise EdgeError(f"{self.model_path}: the model gave {raw.size} outputs for {n} image(s), expected "
                            f"{len(self.labels)} each; the file is corrupt")
        raw = raw.reshape(n, -1)
        out = dequantize(raw, self.output_quant) if self.output_quant is not None else raw.astype(np.float32)
        return softmax(out) if self.apply_softmax else out

    def classify(self, image: ImageLike, top_k: int = 3) -> list[Prediction]:
        """Top-k predictions for one image: a path, a PIL image or a numpy array."""
        return self.classify_batch([image], top_k)[0]

    def classify_batch(self, images: Iterable[ImageLike], top_k: int = 3) -> list[list[Prediction]]:
        """Top-k predictions for several images, run as one batch."""
        pictures = [_as_image(image) for image in images]
        if not pictures:
            return []
        batch = np.stack([to_model_input(p) for p in pictures])
        photos = [not is_dataset_style(p) for p in pictures]
        return [self.top_k(row, top_k) for row in self.scores(batch, photos)]

    def top_k(self, scores: np.ndarray, k: int = 3) -> list[Prediction]:
        """Rank one row of scores; ties keep label order."""
        if k < 1:
            raise EdgeError(f"top_k must be at least 1, got {k}")
        order = np.argsort(-scores, kind="stable")[:k]
        return [Prediction(self.labels[i], int(i), float(scores[i])) for i in order]

    def describe(self) -> str:
        """One line about the loaded model, for logs and --bench."""
        b = self.backend
        quant = f", input scale {self.input_quant[0]:.6g} zero point {self.input_quant[1]}" if self.input_quant else ""
        return (
            f"{self.model_path.name}: {type(b).__name__}, input {np.dtype(b.input_dtype).name}{quant}, "
            f"normalization mean {self.mean:g} std {self.std:g}, {len(self.labels)} labels"
        )

    def __repr__(self) -> str:
        return f"Classifier({str(self.model_path)!r})"


def _as_image(image: ImageLike) -> Image.Image | np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    return image


UNSURE = "unsure"


def is_unsure(predictions: list[Prediction], threshold: float | None) -> bool:
    """True when the best score is below `threshold` (never without one)."""
    return threshold is not None and predictions[0].score < threshold


def answer(predictions: list[Prediction], threshold: float | None = None) -> str:
    """The top label, or "unsure" when its score is below `threshold`."""
    return UNSURE if is_unsure(predictions, threshold) else predictions[0].label


def json_answer(name: str, predictions: list[Prediction], threshold: float | None = None) -> dict:
    """One `edge-classify --json` answer: {"path", "label", "top_k": [{"label", "index", "score"}, ...]}."""
    top_k = [{"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in predictions]
    return {"path": name, "label": answer(predictions, threshold), "top_k": top_k}


def format_predictions(predictions: list[Prediction], threshold: float | None = None) -> str:
    """'Coat 0.912, Pullover 0.051' or, when the best score is under `threshold`, 'unsure (Coat 0.412, …)'."""
    ranked = ", ".join(f"{p.label} {p.score:.3f}" for p in predictions)
    return f"{UNSURE} ({ranked})" if is_unsure(predictions, threshold) else ranked
