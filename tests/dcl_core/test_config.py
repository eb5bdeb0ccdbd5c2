import subprocess
import sys

import pytest
from pydantic import TypeAdapter, ValidationError

from dcl_core.config import DatasetSpec, TrainConfig
from dcl_core.jobs import JobSpec


def _error_fields(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in exc.errors()}


def test_a_string_is_accepted_as_a_dataset_source():
    config = TrainConfig(dataset="builtin:digits")
    assert config.dataset == DatasetSpec(source="builtin:digits")
    assert config.dataset.kind == "builtin"
    assert DatasetSpec(source="/data/imgs.zip").kind == "path"


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"batch_size": 1}, "batch_size"),
        ({"temperature": 0}, "temperature"),
        ({"encoder": "vit_h"}, "encoder"),
        ({"method": "byol"}, "method"),
        ({"epocs": 3}, "epocs"),
        ({"dataset": "builtin:imagenet"}, "dataset.source"),
        ({"dataset": "torchvision:ImageNet"}, "dataset.source"),
        ({"dataset": "dataset:../../etc"}, "dataset.source"),
        ({"augment": {"crop_scale": [0.5, 0.2]}}, "augment.crop_scale"),
        ({"augment": {"crop_scale": [0.2, 1.5]}}, "augment.crop_scale"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(bad, field):
    with pytest.raises(ValidationError) as info:
        TrainConfig.model_validate(bad)
    assert any(f.startswith(field) for f in _error_fields(info.value)), info.value


def test_inconsistent_combinations_are_rejected_with_the_reason():
    with pytest.raises(ValidationError, match="warmup_epochs"):
        TrainConfig(epochs=5, warmup_epochs=5)


def test_default_learning_rate_scales_with_batch_size():
    assert TrainConfig(batch_size=512).learning_rate() == pytest.approx(0.12)
    assert TrainConfig(optimizer="lars", batch_size=256).learning_rate() == pytest.approx(0.3)
    assert TrainConfig(optimizer="adam").learning_rate() == 1e-3
    assert TrainConfig(lr=0.5).learning_rate() == 0.5


def test_job_requests_are_discriminated_by_type():
    adapter = TypeAdapter(JobSpec)
    probe = adapter.validate_python({"type": "linear_probe", "encoder_job": "job_1", "train": "builtin:digits", "test": "builtin:digits"})
    assert probe.classifier == "logistic" and probe.train.source == "builtin:digits"
    assert adapter.validate_python({"type": "pretrain"}).config == TrainConfig()
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "finetune"})


def test_importing_the_config_does_not_import_torch():
    code = "import sys, dcl_core.config, dcl_core.errors, dcl_core.hooks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("bad, message", [
    ({"encoder": "resnet81"}, "did you mean 'resnet18'"),
    ({"encoder": "timm:"}, "timm model name"),
    ({"encoder": "timm:ResNet50"}, "lower case"),
    ({"encoder": "resnet18", "encoder_kwargs": {"depth": 2}}, "takes no encoder_kwargs"),
    ({"encoder": "timm:resnet18", "encoder_kwargs": {"pretrained": True}}, "set by dcl itself"),
    ({"encoder": "timm:resnet18", "small_stem": True}, "small_stem applies to"),
    ({"export": ["tflite"]}, "export"),
])
def test_encoder_names_kwargs_and_exports_are_checked_without_torch(bad, message):
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate(bad)


def test_a_timm_encoder_with_kwargs_is_a_valid_config():
    config = TrainConfig(encoder="timm:vit_small_patch16_224", encoder_kwargs={"depth": 2, "drop_path_rate": 0.1},
                         export=["onnx", "hf"])
    assert config.encoder_kwargs == {"depth": 2, "drop_path_rate": 0.1}
