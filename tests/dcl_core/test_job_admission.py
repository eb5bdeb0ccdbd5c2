"""Each job type's admission rule, as the pure function it is: a spec and a context in, a
Refusal naming the field (and the right status) out, or nothing."""

from __future__ import annotations

import pytest

from dcl_core.jobs import JOB_TYPES, Refusal
from dcl_core.jobs.embed import EmbedJob
from dcl_core.jobs.linear_probe import ProbeJob
from dcl_core.jobs.pretrain import PretrainJob
from dcl_core.jobs.sweep import SweepJob


class World:
    """What the service knows: the owner's datasets and jobs, the torchvision files on disk."""

    def __init__(self, datasets=None, jobs=None, torchvision=(), allow_download=False):
        self.owner = "alice"
        self.datasets = datasets or {}
        self.jobs = jobs or {}
        self.torchvision = set(torchvision)
        self.allow_download = allow_download

    def dataset_images(self, dataset_id):
        if dataset_id not in self.datasets:
            raise LookupError(dataset_id)
        return self.datasets[dataset_id]

    def torchvision_missing(self, name, split):
        return (name, split) not in self.torchvision

    def job_state(self, job_id):
        return self.jobs.get(job_id)


def refusal(spec, world) -> Refusal:
    with pytest.raises(Refusal) as caught:
        JOB_TYPES[spec.type].admit(spec, world)
    return caught.value


def pretrain(**config) -> PretrainJob:
    return PretrainJob.model_validate({"config": {"encoder": "convnet_small", **config}})


def test_every_job_type_has_an_admission_rule():
    assert all(callable(kind.admit) for kind in JOB_TYPES.values())
    assert list(JOB_TYPES) == ["pretrain", "linear_probe", "embed", "sweep"]


def test_a_local_path_is_refused_at_its_field():
    found = refusal(pretrain(dataset="/home/me/images"), World())
    assert (found.field, found.status) == ("config.dataset.source", 422)
    assert "POST /v1/datasets" in found.message


def test_an_unknown_upload_is_refused_and_a_known_one_must_hold_a_batch():
    assert refusal(pretrain(dataset="dataset:ds_0123456789abcdef"), World()).field == "config.dataset.source"
    world = World(datasets={"ds_0123456789abcdef": 40})
    found = refusal(pretrain(dataset="dataset:ds_0123456789abcdef", batch_size=64), world)
    assert found.field == "config.batch_size" and "batch_size <= 40" in found.message
    JOB_TYPES["pretrain"].admit(pretrain(dataset="dataset:ds_0123456789abcdef", batch_size=32), world)


def test_max_images_counts_and_builtin_sizes_are_known():
    found = refusal(pretrain(dataset={"source": "builtin:digits", "max_images": 20}, batch_size=32), World())
    assert "20 images" in found.message
    JOB_TYPES["pretrain"].admit(pretrain(dataset="builtin:digits", batch_size=256), World())


def test_torchvision_data_must_be_on_the_server_unless_downloads_are_allowed():
    spec = pretrain(dataset="torchvision:CIFAR10")
    assert "DCL_TORCHVISION_ROOT" in refusal(spec, World()).message
    JOB_TYPES["pretrain"].admit(spec, World(torchvision=[("CIFAR10", "train")]))
    download = pretrain(dataset={"source": "torchvision:CIFAR10", "download": True})
    assert refusal(download, World()).field == "config.dataset.download"
    JOB_TYPES["pretrain"].admit(download, World(allow_download=True))


@pytest.mark.parametrize("model", [ProbeJob, EmbedJob])
def test_probe_and_embed_need_a_succeeded_pretrain_job(model):
    fields = {"train": "builtin:digits", "test": "builtin:digits"} if model is ProbeJob else {"data": "builtin:digits"}
    spec = model.model_validate({"encoder_job": "job_1", **fields})
    assert refusal(spec, World()).status == 404
    assert refusal(spec, World(jobs={"job_1": ("embed", "succeeded")})).status == 409
    found = refusal(spec, World(jobs={"job_1": ("pretrain", "running")}))
    assert found.status == 409 and "wait for it to finish" in found.message
    JOB_TYPES[spec.type].admit(spec, World(jobs={"job_1": ("pretrain", "succeeded")}))


def test_a_sweep_names_the_grid_point_that_cannot_run():
    spec = SweepJob.model_validate({"config": {"encoder": "convnet_small", "dataset": {"source": "builtin:digits",
                                                                                       "max_images": 100}},
                                    "grid": {"batch_size": [32, 128]}})
    found = refusal(spec, World())
    assert found.field == "grid" and found.message.startswith('grid point {"batch_size": 128}: config.batch_size')


@pytest.mark.parametrize("model", [ProbeJob, EmbedJob])
def test_what_the_engine_runs_holds_none_of_the_services_fields(model):
    fields = {"train": "builtin:digits", "test": "builtin:digits"} if model is ProbeJob else {"data": "builtin:digits"}
    spec = model.model_validate({"encoder_job": "job_1", "encoder_model": "model:digits@production",
                                 "name": "a probe", "tags": ["x"], **fields})
    config = spec.probe_config() if model is ProbeJob else spec.embed_config()
    assert type(config).__name__ in ("ProbeConfig", "EmbedConfig")
    assert not {"encoder_job", "encoder_model", "name", "tags", "notes", "type"} & set(type(config).model_fields)
