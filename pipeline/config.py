"""One typed configuration for the whole pipeline; written whole into the manifest."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError

# The checkout this package sits in (pipeline/config.py -> its parent's parent): relative search paths
# ("../shared/real-photos-dev") are relative to it, wherever the package itself is moved inside.
REPO = Path(__file__).resolve().parent.parent

# Fashion-MNIST training-set pixel statistics: the model sees (x/255 - MEAN) / STD.
MEAN = 0.2860
STD = 0.3530


@dataclass
class DataConfig:
    data_dir: str | None = None       # explicit folder with the four IDX files (searched first)
    val_size: int = 5000              # stratified, seeded validation split of the training set
    train_limit: int | None = None    # stratified subset of the training split (quick runs, tests)
    test_limit: int | None = None     # first N test images (quick runs, tests); None = all 10,000
    photos_dir: str | None = None     # real phone photos to MEASURE on (else `search.photos_dev`)
    mean: float = MEAN
    std: float = STD


@dataclass
class ArchConfig:
    """The compact family (`--model custom`, what `python -m pipeline tune` searches): blocks of conv-BN-ReLU,
    a pooling between blocks, global average pooling, Dense10. The defaults are `compact`'s."""
    widths: list[int] = field(default_factory=lambda: [16, 32, 44])   # filters per block; one block each
    convs: int = 2                    # conv-BN-ReLU per block
    kernel: int = 3                   # kernel size of every conv (or depthwise conv)
    pool: str = "max"                 # max | avg, between blocks
    separable: bool = False           # depthwise-separable convs after the first one


@dataclass
class TrainConfig:
    model: str = "compact"            # mlp | baseline | compact | tiny | custom (built from `arch`)
    epochs: int = 35                  # before pruning; with pruning on, the cosine spans these + prune.epochs
    batch_size: int = 512
    optimizer: str = "sgd"            # sgd (Nesterov, warm-up + cosine) | adam (the seeds' tutorial way) |
    #                                   adam-cosine (Adam on the warm-up + cosine schedule: imported models)
    lr: float = 0.2
    warmup_epochs: float = 3.0
    momentum: float = 0.9
    weight_decay: float = 5e-4        # SGD weight-decay equivalent, applied as L2 on kernels only
    label_smoothing: float = 0.1
    augment: bool = True              # pad 2 px + random crop 28 + horizontal flip
    photo_augment: float = 0.0        # share of training images given the "phone photo" transform
    arch: ArchConfig = field(default_factory=ArchConfig)   # only read by model "custom"


@dataclass
class PruneConfig:
    enabled: bool = True
    target_sparsity: float = 0.5
    epochs: int = 15                  # the last epochs of the one cosine schedule, trained with pruning
    ramp_fraction: float = 0.5        # sparsity reaches the target after this share of them


@dataclass
class PhotosTrainConfig:
    # Real photos to adapt on (pipeline/train/adapt.py): --photos-train DIR, else, when `auto`, the first
    # folder of `search.photos_train` present.
    dir: str | None = None
    auto: bool = True
    exclude_senders_of: str | None = None   # leave out photos whose sender_id is in this folder's MANIFEST.tsv
    variants: int = 8                 # augmented variants per photo, besides the photo itself
    # Chosen on the default model (adapting on 4/5 of real-photos-train's senders, measured on the fifth, on
    # real-photos-dev and on the Fashion-MNIST test set): share 0.25 at lr 0.02 gave dev 105/162 but cost
    # ~1 pp of Fashion-MNIST; any lr from 0.002 to 0.01 at share 0.15–0.25, frozen batch norm or distilling
    # the model's own answers still cost 0.4–1 pp; share 0.05 at lr 0.005 kept 93.36 % (before: 93.40 %)
    # and gave dev 110/162 (before: 96).
    share: float = 0.05               # share of every adapt batch that is photo variants
    balance: float = 0.5              # classes drawn in proportion to count**balance (0: equal, 1: as found)
    epochs: int = 3                   # the fine-tune, after pruning, masks fixed
    lr: float = 0.005                 # its peak learning rate, cosine to 0
    freeze_bn: bool = True            # keep the batch-norm statistics of the Fashion-MNIST training
    footwear_pairs: int = 0           # synthetic photos of shoe pairs per footwear class (pipeline/train/footwear_pairs.py)


@dataclass
class QuantConfig:
    calibration_size: int = 500       # int8 representative images from the TRAINING split, seeded
    onnx_opset: int = 17
    # How much better (top-1 agreement with the float model, validation split) onnxruntime's QDQ int8 model must
    # be to ship instead of tf2onnx's, which OpenCV DNN and other clients read correctly (quantize/onnx_choice.py):
    # 0.5 pp = 25 of 5,000 images, well above the 2 images seen between them.
    onnx_qdq_margin: float = 0.005


@dataclass
class GateConfig:
    max_drop_pp: float = 0.3          # accuracy drop vs the float Keras model, percentage points
    min_agreement: float = 0.99       # top-1 agreement with the float Keras model
    max_rgb_disagreement: float = 0.001   # the RGB model vs model_int8.tflite on the same gray images


@dataclass
class McuConfig:
    """The microcontroller target (pipeline/mcu/): model_int8.tflite in TensorFlow Lite Micro. An extra target,
    not a gate on the Pi release: a model it cannot run is marked "not for microcontrollers" unless `require`."""
    enabled: bool = True
    require: bool = False             # --require-mcu: fail the export instead of marking the release
    min_agreement: float = 0.999      # top-1 agreement with LiteRT's built-in reference kernels


@dataclass
class KerasModelConfig:
    """A user's own Keras model (`export --keras-model PATH`, pipeline/keras_import/importer.py) in place of ours."""
    path: str | None = None           # a Keras 3 .keras, an HDF5 .h5 (Keras 2 / tf_keras or Keras 3) or a SavedModel folder
    # What the model expects of its pixels when it does not say so itself (a Rescaling or Normalization layer);
    # neither: pixel / 255. Written into the manifest as data.mean / data.std: input = (pixel/255 - mean) / std.
    input_scale: float | None = None  # model input = pixel * SCALE (1: raw 0..255)
    normalization: list[float] | None = None   # [MEAN, STD]: model input = (pixel/255 - MEAN) / STD
    # Below this float accuracy on the test images the model is not exported: its normalization is wrong (or
    # it is not a Fashion-MNIST model); chance is 10 %, the tutorials' models reach 85-92 %.
    min_accuracy: float = 0.5
    # The proof that the rebuilt tf_keras model is the original: largest absolute difference of any output on
    # the test images (top-1 must be identical as well).
    max_abs_diff: float = 1e-4
    release: str = "exported"         # the shipped release the report sets the imported model beside


# Where a download of Fashion-MNIST goes; also the last place searched.
KERAS_CACHE = "~/.keras/datasets/fashion-mnist"


@dataclass
class SearchConfig:
    """Where data is looked for when no flag names it, first match wins (`search_path`): "$VAR" is an
    environment variable (skipped when unset), "~" is the home folder, a relative path is relative to the
    checkout (REPO), wherever the command is run from."""
    fashion_mnist: list[str] = field(default_factory=lambda: [
        "$FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist", KERAS_CACHE])   # the four IDX files (--data-dir first)
    photos_dev: list[str] = field(default_factory=lambda: [
        "$FASHION_EDGE_PHOTOS", "../shared/real-photos-dev"])       # real photos to measure on (--photos first)
    photos_train: list[str] = field(default_factory=lambda: [
        "$FASHION_EDGE_PHOTOS_TRAIN", "../shared/real-photos-train"])   # real photos to adapt on (--photos-train first)


@dataclass
class SeedConfig:
    """Offsets from `Config.seed` of the stages' own random streams, so no two stages draw the same numbers."""
    data: int = 1                     # the stratified `data.train_limit` subset
    prune: int = 1                    # the pruning fine-tune
    adapt: int = 2                    # the real-photo fine-tune
    representative: int = 2           # the int8 representative images drawn from the training split
    footwear_pairs: int = 7           # the synthetic shoe-pair photos


@dataclass
class Config:
    seed: int = 0
    profile: str = "default"
    # Where the model came from: a `tune` trial (export --from-tune, a sentence), or the user's file
    # (export --keras-model: {"kind": "keras-model", "file", "sha256", "saved_by", "format"}).
    origin: str | dict | None = None
    build_dir: str = "build"
    export_dir: str = "exported"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    photos_train: PhotosTrainConfig = field(default_factory=PhotosTrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    mcu: McuConfig = field(default_factory=McuConfig)
    keras_model: KerasModelConfig = field(default_factory=KerasModelConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Named training profiles. `default` fits `make export` in <= 30 min on 2 cores; `best` is the
# long schedule for the accuracy benchmark; `quick` is for tests (subset, 4 + 2 epochs).
PROFILES: dict[str, dict] = {
    "default": {},
    "best": {"train": {"epochs": 60}, "prune": {"epochs": 20}},
    "quick": {
        "data": {"train_limit": 3000, "val_size": 1000, "test_limit": 1000},
        "train": {"epochs": 4, "batch_size": 128, "warmup_epochs": 0.0, "lr": 0.1},
        "prune": {"epochs": 2},
        "photos_train": {"auto": False, "variants": 2, "epochs": 1},   # photos only when given
        "quant": {"calibration_size": 100},
    },
}


# The tutorial seeds are trained the tutorial way unless a flag says otherwise.
SEED_STYLE = {"optimizer": "adam", "augment": False, "photo_augment": 0.0, "epochs": 10, "batch_size": 128, "label_smoothing": 0.0,
              "weight_decay": 0.0, "warmup_epochs": 0.0}


# An imported model is not trained here: `train.epochs` 0, and pruning fine-tunes it the way such models are
# trained (Adam, no augmentation), its learning rate on a cosine from `lr` to 0 over `prune.epochs`. Label
# smoothing bounds the logits, which full-integer int8 needs: the TF tutorial's MLP fine-tuned without it kept
# logits over a 69-wide range, whose int8 step tied the top two classes on 1.3 % of the test images (int8
# agreement 98.68 %, gate 99 %); with 0.05, 99.75 % (DebuggerCafe's dense net: 98.54 % → 99.40 %) at no cost
# in float accuracy (0.1 cost the MLP 0.4 pp). Real photos adapt it only when --photos-train names a folder.
IMPORT_STYLE = {"train": {"model": "keras-model", "epochs": 0, "optimizer": "adam-cosine", "lr": 5e-4,
                          "warmup_epochs": 0.0, "batch_size": 128, "augment": False, "photo_augment": 0.0,
                          "label_smoothing": 0.05, "weight_decay": 0.0},
                "photos_train": {"auto": False}}


def make_config(profile: str = "default", **overrides) -> Config:
    """Config for a named profile; `overrides` use dotted keys, e.g. {"train.epochs": 2}."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    cfg = Config(profile=profile)
    for section, values in PROFILES[profile].items():
        for key, value in values.items():
            setattr(getattr(cfg, section), key, value)
    if overrides.get("train.model") in ("mlp", "baseline"):
        for key, value in SEED_STYLE.items():
            setattr(cfg.train, key, value)
    if overrides.get("keras_model.path"):
        for section, values in IMPORT_STYLE.items():
            for key, value in values.items():
                setattr(getattr(cfg, section), key, value)
    for dotted, value in overrides.items():
        if value is None:
            continue
        target = cfg
        *path, leaf = dotted.split(".")
        for part in path:
            target = getattr(target, part)
        if not hasattr(target, leaf):
            raise ValueError(f"unknown config key {dotted!r}")
        setattr(target, leaf, value)
    check(cfg)
    return cfg


def check(cfg: Config) -> None:
    """Settings no run can use: one line naming the option, before anything is trained."""
    problems = []
    k = cfg.keras_model
    if k.path is None and cfg.train.epochs < 1:
        problems.append(f"--epochs must be at least 1 (got {cfg.train.epochs})")
    if cfg.prune.enabled and cfg.prune.epochs < 1:
        problems.append(f"--prune-epochs must be at least 1 (got {cfg.prune.epochs})")
    if not 0.0 <= cfg.prune.target_sparsity < 1.0:
        problems.append(f"--target-sparsity must be in [0, 1) (got {cfg.prune.target_sparsity})")
    arch = cfg.train.arch
    if cfg.train.model == "custom" and (not arch.widths or min(arch.widths) < 1 or len(arch.widths) > 4
                                        or arch.convs < 1 or arch.kernel not in (1, 3, 5, 7)
                                        or arch.pool not in ("max", "avg")):
        problems.append(f"custom architecture: 1–4 widths ≥ 1, convs ≥ 1, kernel 1/3/5/7, pool max/avg (got {arch})")
    if cfg.train.batch_size < 1:
        problems.append(f"--batch-size must be at least 1 (got {cfg.train.batch_size})")
    a = cfg.photos_train
    if not 0.0 < a.share < 1.0:
        problems.append(f"--photos-share must be between 0 and 1 (got {a.share})")
    if a.epochs < 1 or a.variants < 0:
        problems.append(f"--photos-epochs must be at least 1 and --photos-variants at least 0 "
                        f"(got {a.epochs}, {a.variants})")
    if k.path is not None:
        if not Path(k.path).exists():
            problems.append(f"--keras-model {k.path}: no such file or folder")
        if k.input_scale is not None and k.normalization is not None:
            problems.append("give --input-scale or --normalization, not both")
        if k.input_scale is not None and not k.input_scale > 0:
            problems.append(f"--input-scale must be positive (got {k.input_scale})")
        if k.normalization is not None and (len(k.normalization) != 2 or not k.normalization[1] > 0):
            problems.append(f"--normalization takes MEAN,STD with STD > 0 (got {k.normalization})")
        if cfg.train.model != "keras-model":
            problems.append("--model does not apply to --keras-model: the architecture is the file's")
        if cfg.train.epochs != 0:
            problems.append("--epochs does not apply to --keras-model: the model is not trained here "
                            "(--prune-epochs sets its fine-tune)")
    if problems:
        raise ConfigError("; ".join(problems))


def schedule_epochs(cfg: Config) -> int:
    """Length of the one warm-up + cosine schedule. With pruning on, training stops at
    `train.epochs` and pruning carries on along the same schedule to lr 0, instead of restarting."""
    return cfg.train.epochs + (cfg.prune.epochs if cfg.prune.enabled else 0)


def without_pruning(cfg: Config) -> Config:
    """`cfg` for a stand-alone training (compare, folds, `train`): its schedule ends at lr 0."""
    return dataclasses.replace(cfg, prune=dataclasses.replace(cfg.prune, enabled=False))


def search_path(entries: list[str]) -> list[tuple[str, Path]]:
    """(entry, folder) for each entry of a `SearchConfig` list, in order: "$VAR" read from the environment
    (left out when unset or empty), "~" expanded, a relative path taken relative to REPO and normalized
    lexically (REPO/../shared/x is REPO.parent/shared/x: the photo-variant cache hashes the photos' paths)."""
    found = []
    for entry in entries:
        if entry.startswith("$"):
            value = os.environ.get(entry[1:])
            if value:
                found.append((entry, Path(value).expanduser()))
            continue
        path = Path(entry).expanduser()
        found.append((entry, path if path.is_absolute() else Path(os.path.normpath(REPO / path))))
    return found
