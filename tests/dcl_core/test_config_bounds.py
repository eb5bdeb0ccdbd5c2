"""Configs that would pass validation and then always fail at run time are refused up front."""

import pytest
from pydantic import ValidationError

from dcl_core.config import EmbedJob, ProbeJob, TrainConfig
from dcl_core.hooks import NullHooks
from dcl_core.training.train import fit


@pytest.mark.parametrize("field, value", [
    ("seed", 2**32), ("seed", 2 * 10**10), ("projection_dim", 10**9), ("projection_hidden_dim", 65537),
    ("max_steps", 10**12), ("checkpoint_every_steps", 2**40),
])
def test_out_of_range_train_fields_are_refused(field, value):
    with pytest.raises(ValidationError, match=field):
        TrainConfig.model_validate({field: value})


@pytest.mark.parametrize("job", [ProbeJob, EmbedJob])
def test_encoder_job_must_look_like_a_job_id(job):
    base = {"train": "builtin:digits", "test": "builtin:digits"} if job is ProbeJob else {"data": "builtin:digits"}
    with pytest.raises(ValidationError, match="encoder_job"):
        job.model_validate({**base, "encoder_job": "job_\x00x"})
    assert job.model_validate({**base, "encoder_job": "job_0123abcd"}).encoder_job == "job_0123abcd"


def test_the_largest_seed_trains(tmp_path):
    # The augmentation seed is (seed * 1_000_003 + step) * 1024 + rank: it must stay under 2**64.
    config = TrainConfig.model_validate(dict(
        encoder="convnet_small", dataset={"source": "builtin:digits", "max_images": 64}, batch_size=16,
        epochs=1, max_steps=2, projection_hidden_dim=16, projection_dim=8, seed=2**32 - 1, device="cpu",
    ))
    assert fit(config, tmp_path, NullHooks()).steps == 2
