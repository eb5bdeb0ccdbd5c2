"""Job and training configuration: the one schema the API validates and the engine trains from.

Imports only pydantic (the API uses it without torch). Every field has a default a user
can start from; invalid values and combinations are rejected with the field named.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dcl_core.models.encoders import check_encoder_kwargs, check_encoder_name, encoder_entry
from dcl_core.training.methods import MethodName

TORCHVISION_DATASETS = ("CIFAR10", "CIFAR100", "STL10", "MNIST", "FashionMNIST", "SVHN")
BUILTIN_DATASETS = ("digits",)
DATASET_ID = re.compile(r"^ds_[0-9a-f]{8,32}$")

JOB_ID = r"^[A-Za-z0-9_-]+$"

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
EncoderKwarg = Union[bool, int, float, Annotated[str, Field(max_length=200)], None,
                     Annotated[list[Union[int, float]], Field(max_length=16)]]
# Bounds that keep a config from failing only at run time: the augmentation seed of step s is
# (seed * 1_000_003 + s) * 1024 + rank, which torch needs under 2**64; a projection wider than
# this would not fit in memory; counts past a billion overflow the job store's 32-bit steps.
Seed = Annotated[int, Field(ge=0, lt=2**32, description="Random seed, 0 <= seed < 2**32.")]
MAX_DIM = 65536
MAX_COUNT = 10**9


class Strict(BaseModel):
    """Unknown fields are an error (a typo must not silently train with a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(Strict):
    """Where images come from. A plain string is accepted as `{"source": ...}`.

    `source` is one of: `builtin:digits`; `torchvision:NAME` (CIFAR10, CIFAR100, STL10,
    MNIST, FashionMNIST, SVHN); `dataset:ID` (an upload to the service); or a local path to
    an image folder, a .zip/.tar(.gz) of one, or an .npz with `x` (N,H,W,C uint8) and
    optional `y`. Paths are for the local CLI; the API accepts only the other three.
    """

    source: str = Field(min_length=1, max_length=4096)
    split: Literal["train", "test"] = "train"
    image_size: int | None = Field(
        default=None, ge=8, le=1024,
        description="Resize images to this square size; None keeps the native size "
        "(folders of mixed sizes need it set).",
    )
    max_images: int | None = Field(default=None, ge=2, le=MAX_COUNT, description="Use only the first N images.")
    skip_corrupt: bool = Field(default=False, description="Skip unreadable images instead of failing.")
    download: bool = Field(default=False, description="torchvision datasets: allow downloading.")
    in_memory: bool | None = Field(
        default=None,
        description="Training: decode every image once and hold them in memory (true), or stream the "
        "image files from disk with DataLoader workers (false); None: stream image folders, archives and "
        "uploaded image trees whose decoded size (N*3*S*S bytes) is over 4 GiB. .npz, builtin and "
        "torchvision sources are always in memory.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value):
        return {"source": value} if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        kind, _, name = source.partition(":")
        if kind == "builtin" and name not in BUILTIN_DATASETS:
            raise ValueError(f"unknown builtin dataset {name!r}; choose one of {list(BUILTIN_DATASETS)}")
        if kind == "torchvision" and name not in TORCHVISION_DATASETS:
            raise ValueError(
                f"unknown torchvision dataset {name!r}; choose one of {list(TORCHVISION_DATASETS)}"
            )
        if kind == "dataset" and not DATASET_ID.match(name):
            raise ValueError(f"{source!r} is not a dataset id; upload with POST /v1/datasets to get one")
        return source

    @property
    def kind(self) -> Literal["builtin", "torchvision", "dataset", "path"]:
        prefix = self.source.partition(":")[0]
        return prefix if prefix in ("builtin", "torchvision", "dataset") else "path"  # type: ignore[return-value]


class AugmentConfig(Strict):
    """SimCLR views (Chen et al. 2020, appendix A), applied batched on the training device."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: Probability = 0.5
    jitter_p: Probability = 0.8
    brightness: float = Field(default=0.4, ge=0.0)
    contrast: float = Field(default=0.4, ge=0.0)
    saturation: float = Field(default=0.4, ge=0.0)
    hue: float = Field(default=0.1, ge=0.0, le=0.5)
    grayscale_p: Probability = 0.2
    blur_p: Probability | None = Field(
        default=None, description="None: 0.5 for images larger than 64 px, else 0 (as SimCLR on CIFAR)."
    )
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, float, float] | None = Field(
        default=None, description="Normalisation mean per channel; None: measured on the dataset."
    )
    std: tuple[float, float, float] | None = None

    @field_validator("crop_scale", "crop_ratio", "blur_sigma")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"must be (low, high) with 0 < low <= high, got {value}")
        return value

    @field_validator("crop_scale")
    @classmethod
    def _scale_at_most_one(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[1] > 1.0:
            raise ValueError("crop_scale is a fraction of the image area: high must be <= 1")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value):
        if value is not None and min(value) <= 0:
            raise ValueError("std must be > 0 for every channel")
        return value

    def blur_probability(self, image_size: int) -> float:
        if self.blur_p is not None:
            return self.blur_p
        return 0.5 if image_size > 64 else 0.0


class KnnMonitorConfig(Strict):
    """Weighted kNN accuracy on a labelled split, computed at epoch ends (Wu et al. 2018)."""

    train: DatasetSpec
    test: DatasetSpec
    k: int = Field(default=200, ge=1, le=MAX_COUNT)
    temperature: float = Field(default=0.1, gt=0)
    every_epochs: int = Field(default=1, ge=1, le=100000)


class EvaluateConfig(Strict):
    """Score the encoder when its training ends, in the same job (`dcl_core.evaluation.probe`): the test
    split's top-1 accuracy of a linear probe (`logistic`), a weighted kNN (`knn`) or `both`."""

    train: DatasetSpec
    test: DatasetSpec
    classifier: Literal["logistic", "knn", "both"] = "logistic"
    retrieval: bool = Field(
        default=True, description="Also score the test split as a retrieval set (recall@1/5/10 and MAP@R, "
        "labels as relevance).",
    )


Device = Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class TrainConfig(Strict):
    """A pretraining run. Defaults follow the DCL paper's CIFAR-10 set-up (Yeh et al. 2021)."""

    method: MethodName = "dcl"
    dataset: DatasetSpec = DatasetSpec(source="builtin:digits")
    encoder: str = Field(
        default="resnet18", max_length=140,
        description="resnet18, resnet34, resnet50, convnet_small, or timm:NAME (any timm model, "
        "e.g. timm:vit_small_patch16_224; needs the timm extra where the run trains).",
    )
    encoder_kwargs: dict[str, EncoderKwarg] = Field(
        default_factory=dict, max_length=32,
        description="timm:NAME only: keyword arguments for timm.create_model (e.g. depth, embed_dim).",
    )
    small_stem: bool | None = Field(
        default=None, description="3x3 stride-1 conv1, no max-pool; None: on for images <= 64 px. "
        "ResNets and convnet_small only.",
    )
    projection_hidden_dim: int | None = Field(
        default=None, ge=1, le=MAX_DIM, description="None: the encoder's feature dim."
    )
    projection_dim: int = Field(default=128, ge=1, le=MAX_DIM)
    projection_layers: int = Field(default=2, ge=1, le=4)

    batch_size: int = Field(default=256, ge=2, le=65536, description="Images per step; each gives 2 views.")
    epochs: int = Field(default=100, ge=1, le=100000)
    max_steps: int | None = Field(
        default=None, ge=1, le=MAX_COUNT, description="Stop after this many steps (for short runs)."
    )
    temperature: float = Field(default=0.1, gt=0, le=10)
    sigma: float = Field(default=0.5, gt=0, le=100, description="DCLW: the vMF weighting's temperature.")

    optimizer: Literal["sgd", "adam", "adamw", "lars"] = "sgd"
    lr: float | None = Field(
        default=None, gt=0, le=100,
        description="None: 0.06*batch/256 for sgd, 0.3*batch/256 for lars, 1e-3 for adam(w).",
    )
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0, le=10)
    exclude_bias_norm_from_wd: bool = True
    warmup_epochs: float = Field(default=0.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"

    augment: AugmentConfig = AugmentConfig()
    knn_monitor: KnnMonitorConfig | None = None
    evaluate: EvaluateConfig | None = Field(
        default=None, description="Score the encoder on labelled data when training ends (scores in the "
        "job's result and in encoder.json).",
    )

    seed: Seed = 0
    device: Device = "auto"
    precision: Precision = Field(default="auto", description="auto: bf16 autocast on CUDA, fp32 elsewhere.")
    compile: bool | None = Field(default=None, description="torch.compile the training step (see compile_step); None: on for CUDA.")
    compile_step: bool | None = Field(
        default=None, description="With compile: compile the whole step (augmentation, loss, backward, optimiser) "
        "with the encoder, not the encoder alone; None: on (single device, not fp16). false: the encoder alone.",
    )
    channels_last: bool | None = Field(default=None, description="None: on for CUDA.")
    log_every_steps: int = Field(default=10, ge=1, le=MAX_COUNT)
    checkpoint_every_steps: int = Field(default=500, ge=1, le=MAX_COUNT, description="Also at every epoch end.")
    checkpoint_every_s: float = Field(
        default=300.0, gt=0, le=1e9, description="Also when this many seconds have passed since the last checkpoint "
        "(and at every epoch end); written in the background.",
    )
    max_runtime_s: float | None = Field(
        default=None, gt=0, description="Fail the run past this wall time (at least 1 s).")
    export: list[Literal["onnx", "hf"]] = Field(
        default_factory=list, max_length=2,
        description="Extra encoder formats: onnx (encoder.onnx, checked with onnxruntime), hf (config.json + "
        "model.safetensors, a Hugging Face-style folder).",
    )

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, name: str) -> str:
        return check_encoder_name(name)

    @field_validator("max_runtime_s")
    @classmethod
    def _at_least_a_second(cls, seconds: float | None) -> float | None:
        # a validator, not ge=1: the published schema keeps its exclusiveMinimum 0 (the contract test)
        if seconds is not None and seconds < 1:
            raise ValueError(f"must be at least 1 second (got {seconds:g}); a run cannot start in less")
        return seconds

    @field_validator("encoder_kwargs")
    @classmethod
    def _usable_kwargs(cls, kwargs: dict, info: ValidationInfo) -> dict:
        if "encoder" not in info.data:  # the encoder itself was refused
            return kwargs
        dataset = info.data.get("dataset")
        return check_encoder_kwargs(info.data["encoder"], kwargs, dataset.image_size if dataset else None)

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.small_stem and not encoder_entry(self.encoder).small_stem:
            raise ValueError(f"small_stem applies to the torchvision ResNets and convnet_small, not {self.encoder!r}; "
                             "leave it unset")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be less than epochs ({self.epochs})")
        if self.optimizer in ("adam", "adamw") and self.momentum != 0.9:
            raise ValueError("momentum applies to sgd and lars only; leave it unset for adam/adamw")
        return self

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        if self.optimizer == "sgd":
            return 0.06 * self.batch_size / 256
        if self.optimizer == "lars":
            return 0.3 * self.batch_size / 256
        return 1e-3


class ProbeConfig(Strict):
    """Evaluate a frozen encoder on labelled data: logistic regression or weighted kNN."""

    train: DatasetSpec
    test: DatasetSpec
    classifier: Literal["logistic", "knn"] = "logistic"
    epochs: int = Field(default=100, ge=1, le=10000, description="logistic: full-batch optimisation steps.")
    lr: float = Field(default=1.0, gt=0, le=100, description="logistic: L-BFGS initial step length.")
    weight_decay: float = Field(default=1e-4, ge=0, le=10)
    k: int = Field(default=200, ge=1, le=MAX_COUNT, description="knn: neighbours.")
    knn_temperature: float = Field(default=0.1, gt=0, le=100)
    batch_size: int = Field(default=1024, ge=1, le=65536, description="Feature extraction batch.")
    device: Device = "auto"
    precision: Precision = "auto"
    seed: Seed = 0


class EmbedConfig(Strict):
    """Compute the encoder's features for every image of a dataset (saved as .npy)."""

    data: DatasetSpec
    batch_size: int = Field(default=1024, ge=1, le=65536)
    device: Device = "auto"
    precision: Precision = "auto"
    index: bool | None = Field(
        default=None, description="The embed job: write the nearest-neighbour index (the L2-normalised features, "
        "searched exactly up to 100,000 images, through an inverted-file index above) and the retrieval scores of "
        "labelled data. None: on for datasets up to 2,000,000 images.",
    )
    map: Literal["auto", "umap", "pca", "none"] = Field(
        default="auto", description="The embed job: a 2-D map of up to 100,000 points (a seeded sample above) and "
        "its TensorBoard projector export. umap needs the explore extra (umap-learn); pca is quick; auto: UMAP "
        "where umap-learn is installed, else PCA.",
    )
    seed: Seed = Field(default=0, description="The samples of the map, the scores and the index.")
