"""The estimators trained for real on digits (a few steps of convnet_small on 8x8 images): the
features are those of the exported files, every input form gives the same ones, Ctrl-C keeps a
checkpoint that warm_start resumes to the uninterrupted weights, and the image-input forms of
scikit-learn's data checks (see SKIPPED in test_api.py)."""

from __future__ import annotations

import gc
import json
import pickle
import re
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.validation import check_is_fitted

from dcl_core.config import EmbedConfig
from dcl_core.data.sources import DataEnv
from dcl_core.estimators import DCL, DCLW, ContrastiveEstimator, SimCLR
from dcl_core.estimators.progress import FitProgress
from dcl_core.evaluation.embed import run_embed
from dcl_core.export import load_encoder

pytestmark = pytest.mark.slow

TINY = dict(encoder="convnet_small", batch_size=32, max_steps=3, log_every_steps=1, verbose=False)
N = 96


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.images * 255 / 16).astype(np.uint8), data.target


@pytest.fixture(scope="module")
def fitted(digits):
    est = DCL(**TINY)
    assert est.fit(digits[0][:N]) is est
    return est


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def _features_of_files(path, X):
    encoder = load_encoder(path)
    with torch.no_grad():
        return encoder(encoder.transform(torch.from_numpy(X).unsqueeze(1).expand(-1, 3, -1, -1))).numpy()


def test_features_are_those_of_the_exported_files(fitted, digits, tmp_path):
    X = digits[0][:200]
    features = fitted.transform(X)
    assert features.shape == (200, 256) and features.dtype == np.float32
    _close(features, _features_of_files(fitted.run_dir_, X))

    saved = fitted.save(tmp_path / "saved")
    meta = json.loads((saved / "encoder.json").read_text())
    assert meta["sha256"] == json.loads((fitted.run_dir_ / "encoder.json").read_text())["sha256"]
    assert meta["config"]["method"] == "dcl" and meta["config"]["max_steps"] == 3
    _close(features, _features_of_files(saved, X))

    # the service's embed job reads the saved folder as it reads a job's files
    np.savez(tmp_path / "x.npz", x=X)
    out = run_embed(saved, EmbedConfig(data=str(tmp_path / "x.npz"), device="cpu"), tmp_path / "f.npy", DataEnv())
    _close(features, np.load(out))

    loaded = ContrastiveEstimator.load(saved)
    assert type(loaded) is DCL and repr(loaded) == repr(DCL(**{**TINY, "verbose": True}))
    _close(features, loaded.transform(X))
    assert list(fitted.get_feature_names_out()[:2]) == ["dcl0", "dcl1"]


def test_every_input_form_gives_the_same_features(fitted, digits, tmp_path):
    X = digits[0][:40]
    expected = fitted.transform(X)
    rgb = np.repeat(X[..., None], 3, axis=3)
    memmap = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=X.shape)
    memmap[:] = X
    memmap.flush()
    readonly = np.load(tmp_path / "x.npy", mmap_mode="r")
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(X):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    np.savez(tmp_path / "x.npz", x=X)
    forms = {
        "NHWC 1": X[..., None], "NHWC 3": rgb, "NCHW": rgb.transpose(0, 3, 1, 2).copy(),
        "tensor": torch.from_numpy(rgb).permute(0, 3, 1, 2), "list": list(X), "F-ordered": np.asfortranarray(X),
        "read-only memmap": readonly, "folder": str(folder), "npz": tmp_path / "x.npz",
        "spec": {"source": str(tmp_path / "x.npz")},
    }
    for name, form in forms.items():
        try:
            _close(expected, fitted.transform(form))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None

    # and to fit: a read-only, channels-last memmap trains to the same encoder
    memmap = np.lib.format.open_memmap(tmp_path / "train.npy", mode="w+", dtype=np.uint8, shape=(N, 8, 8, 1))
    memmap[:] = digits[0][:N, :, :, None]
    memmap.flush()
    again = DCL(**TINY).fit(np.load(tmp_path / "train.npy", mmap_mode="r"))
    _close(expected, again.transform(X))


def test_pipeline_and_fit_transform(fitted, digits):
    X, y = digits
    pipe = make_pipeline(DCL(**TINY), LogisticRegression(max_iter=1000))
    est = pipe[0]
    params = est.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(est)
    pipe.fit(X[:N], y[:N])  # fit(X, y) through fit_transform
    assert pipe.score(X[N:400], y[N:400]) > 0.3  # ten classes: chance is 0.1
    check_is_fitted(est)
    # fit is idempotent and leaves its parameters alone; what it adds ends with "_" (or is private)
    _close(fitted.transform(X[:100]), est.transform(X[:100]))
    assert est.get_params() == params
    public = {name for name in vars(est) if not name.startswith("_")}
    assert {name for name in public - set(params) if not name.endswith("_")} == set()
    assert {"encoder_", "run_dir_", "history_", "train_result_"} <= public
    assert [row["step"] for row in est.history_] == [1, 2, 3]

    # a temporary run folder goes with its estimator
    folder = est.run_dir_
    assert (folder / "encoder.json").exists() and not (folder / "fit-images.npz").exists()
    del pipe, est
    gc.collect()
    assert not folder.exists()


def test_transform_is_per_image(fitted, digits):
    X = digits[0][:64]
    before = dict(vars(fitted))
    features = fitted.transform(X)
    order = np.random.default_rng(0).permutation(64)
    _close(features[order], fitted.transform(X[order]))
    _close(features, np.concatenate([fitted.transform(X[:20]), fitted.transform(X[20:])]))
    assert vars(fitted).keys() == before.keys() and all(vars(fitted)[k] is v for k, v in before.items())


def test_pickle_round_trip(fitted, digits):
    copy = pickle.loads(pickle.dumps(fitted))
    _close(fitted.transform(digits[0][:50]), copy.transform(digits[0][:50]))
    assert getattr(copy, "_temp", None) is None  # the copy does not remove the original's folder


def test_score_is_a_knn_top1(fitted, digits, monkeypatch):
    X, y = digits[0][:300], digits[1][:300]
    score = fitted.score(X, y)
    assert 0.3 < score <= 1.0
    assert fitted.score(X, np.array([f"digit {label}" for label in y])) == score
    with pytest.raises(ValueError, match="one label per image"):
        fitted.score(X, y[:10])
    onehot = np.eye(10, dtype=np.float32)[y]  # features that separate the classes perfectly
    monkeypatch.setattr(fitted, "transform", lambda images: onehot)
    assert fitted.score(X, y) == 1.0


def test_too_few_images(digits):
    with pytest.raises(ValueError, match="fewer than batch_size"):
        DCL(**TINY).fit(digits[0][:1])


def test_ctrl_c_keeps_the_checkpoint_and_warm_start_resumes(fitted, digits, tmp_path, monkeypatch, capsys):
    starts = []
    on_start, on_step = FitProgress.on_start, FitProgress.on_step

    def record_start(self, total_steps, info):
        starts.append(info["start_step"])
        on_start(self, total_steps, info)

    def press_ctrl_c_at_step_1(self, step, metrics):
        on_step(self, step, metrics)
        if step == 1:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(FitProgress, "on_start", record_start)
    monkeypatch.setattr(FitProgress, "on_step", press_ctrl_c_at_step_1)
    est = DCL(**{**TINY, "verbose": True}, run_dir=str(tmp_path / "run"))
    # The hooks run on a background thread (off the training step), so the step that sees the
    # Ctrl-C is the one in flight when it lands: 1, 2 or 3 of 3.
    with pytest.raises(KeyboardInterrupt, match=r"stopped at step [123]/3.*warm_start=True") as stopped:
        est.fit(digits[0][:N])
    stopped_at = int(re.search(r"stopped at step (\d)/3", str(stopped.value)).group(1))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "stopping after this step" in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists() and not hasattr(est, "encoder_")

    with pytest.raises(ValueError, match="holds a run already.*warm_start=True"):
        est.fit(digits[0][:N])
    monkeypatch.setattr(FitProgress, "on_step", on_step)
    est.set_params(warm_start=True).fit(digits[0][:N])
    assert starts == [0, stopped_at]
    assert [row["step"] for row in est.history_] == [1, 2, 3]
    _close(fitted.transform(digits[0][:100]), est.transform(digits[0][:100]))  # the uninterrupted weights


def test_a_second_ctrl_c_stops_at_once(digits, monkeypatch):
    on_step = FitProgress.on_step

    def press_ctrl_c_twice(self, step, metrics):
        on_step(self, step, metrics)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(FitProgress, "on_step", press_ctrl_c_twice)
    est = DCL(**TINY)
    with pytest.raises(KeyboardInterrupt) as caught:
        est.fit(digits[0][:N])
    assert "warm_start" not in str(caught.value)  # raised by the handler, not after a clean stop
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not (est._run / "fit-images.npz").exists()


def test_cross_validation_clones_and_scores(digits):
    X, y = digits[0][:128], digits[1][:128]
    scores = cross_val_score(DCL(**{**TINY, "max_steps": 1}), X, y, cv=2)  # DCL's own score: the kNN top-1
    assert scores.shape == (2,) and all(0.1 < s <= 1 for s in scores)


@pytest.mark.parametrize(("cls", "extra"), [(DCLW, {"sigma": 0.3}), (SimCLR, {})])
def test_other_methods_train_with_their_loss(cls, extra, digits, tmp_path):
    est = cls(**{**TINY, "max_steps": 2}, **extra).fit(digits[0][:N])
    config = est.encoder_.meta["config"]
    assert config["method"] == cls.__name__.lower()
    assert config["sigma"] == extra.get("sigma", 0.5)
    est.save(tmp_path / "saved")
    loaded = DCL.load(tmp_path / "saved")  # the files say which method: the class follows them
    assert type(loaded) is cls and loaded.get_params()["max_steps"] == 2
    _close(est.transform(digits[0][:20]), loaded.transform(digits[0][:20]))
