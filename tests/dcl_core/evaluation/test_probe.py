"""Evaluation: feature extraction, the logistic-regression probe, the weighted kNN, run_probe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from dcl_core.config import ProbeConfig
from dcl_core.data.sources import DataEnv
from dcl_core.errors import UserError
from dcl_core.evaluation.features import extract_features
from dcl_core.evaluation.knn import knn_accuracy, knn_predict
from dcl_core.evaluation.linear import linear_probe, train_logistic
from dcl_core.evaluation.probe import run_probe
from dcl_core.evaluation.result import ProbeResult
from dcl_core.export.encoder import save_encoder
from dcl_core.hooks import NullHooks, StopRequested
from dcl_core.models.encoders import build_encoder
from dcl_core.training.image_ops import EvalTransform


def blobs(n_per_class: int, num_classes: int = 4, dim: int = 16, spread: float = 0.3, seed: int = 0):
    """Well-separated Gaussian blobs: class c centred at 5 * e_c."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.zeros(num_classes, dim)
    centres[torch.arange(num_classes), torch.arange(num_classes)] = 5.0
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=gen)
    return x, y


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:1200], y[:1200], x[1200:], y[1200:]


# --------------------------------------------------------------------------- extract_features


def test_extract_features_matches_a_direct_forward_and_restores_mode():
    torch.manual_seed(0)
    encoder = build_encoder("convnet_small", True)
    encoder.train()
    images = torch.randint(0, 256, (37, 3, 12, 12), dtype=torch.uint8)
    transform = EvalTransform(12, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    feats = extract_features(encoder, images, transform, batch_size=16, device="cpu")
    assert encoder.training  # mode restored
    assert feats.shape == (37, 256) and feats.dtype == torch.float32
    encoder.eval()
    with torch.no_grad():
        expected = encoder(transform(images))
    assert torch.allclose(feats, expected, atol=1e-5)
    # Under bf16 autocast on the CPU: float32 out, close to fp32.
    feats_bf16 = extract_features(encoder, images, transform, batch_size=64, device="cpu", dtype=torch.bfloat16)
    assert feats_bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(feats_bf16, expected).min() > 0.98


def test_extract_features_without_feature_dim_and_empty_input():
    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :5]

    images = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    transform = EvalTransform(4, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    feats = extract_features(Flat(), images, transform, batch_size=3, device="cpu")
    assert torch.allclose(feats, images.float().flatten(1)[:, :5] / 255)
    encoder = build_encoder("convnet_small", False)
    empty = extract_features(encoder, images[:0], transform, device="cpu")
    assert empty.shape == (0, 256)


# --------------------------------------------------------------------------- linear probe


def test_linear_probe_separates_blobs():
    train_x, train_y = blobs(50, seed=0)
    test_x, test_y = blobs(30, seed=1)
    result = linear_probe(train_x, train_y, test_x, test_y)
    assert isinstance(result, ProbeResult)
    assert result.accuracy == 1.0
    assert result.per_class_accuracy == [1.0, 1.0, 1.0, 1.0]
    assert (result.num_train, result.num_test, result.classifier) == (200, 120, "logistic")
    assert result.seconds >= 0


def test_linear_probe_agrees_with_sklearn_on_digits(digits):
    train_x, train_y, test_x, test_y = digits
    scaler = StandardScaler().fit(train_x.numpy())
    sk_c = 1.0
    sk = LogisticRegression(C=sk_c, max_iter=10_000, tol=1e-10).fit(scaler.transform(train_x.numpy()), train_y.numpy())
    sk_acc = float((sk.predict(scaler.transform(test_x.numpy())) == test_y.numpy()).mean())

    # The same objective: sklearn's C * sum(CE) + ||W||^2 / 2  ==  N*C * (mean CE + ||W||^2 / (2 N C)).
    weight_decay = 1.0 / (sk_c * len(train_y))
    model = train_logistic(train_x, train_y, 10, epochs=500, weight_decay=weight_decay)

    def objective(weight, bias):  # in float64, on sklearn's standardised features
        xs = torch.tensor(scaler.transform(train_x.numpy()), dtype=torch.float64)
        weight, bias = torch.as_tensor(weight, dtype=torch.float64), torch.as_tensor(bias, dtype=torch.float64)
        ce = torch.nn.functional.cross_entropy(xs @ weight.t() + bias, train_y)
        return float(ce + 0.5 * weight_decay * weight.pow(2).sum())

    # Our fp32 optimum is sklearn's (float64) optimum up to fp32 resolution of the loss.
    assert objective(model.weight, model.bias) < objective(sk.coef_, sk.intercept_) + 1e-6
    ours = model.predict_proba(test_x).numpy()
    theirs = sk.predict_proba(scaler.transform(test_x.numpy()))
    assert np.abs(ours - theirs).max() < 1e-2

    result = linear_probe(train_x, train_y, test_x, test_y, epochs=500, weight_decay=weight_decay)
    assert abs(result.accuracy - sk_acc) < 0.005
    # The defaults (100 L-BFGS steps, weight_decay 1e-4) land within a few points too.
    default = linear_probe(train_x, train_y, test_x, test_y)
    assert default.accuracy > 0.9 and abs(default.accuracy - sk_acc) < 0.03


def test_per_class_accuracy_values(digits):
    train_x, train_y, test_x, test_y = digits
    model = train_logistic(train_x, train_y, 10, epochs=30, weight_decay=1e-4)
    pred = model.predict(test_x)
    result = linear_probe(train_x, train_y, test_x, test_y, num_classes=10, epochs=30)
    assert len(result.per_class_accuracy) == 10
    for c in range(10):
        mask = test_y == c
        assert result.per_class_accuracy[c] == pytest.approx(float((pred[mask] == c).float().mean()))
    assert result.accuracy == pytest.approx(float((pred == test_y).float().mean()))

    # A class absent from the test split: NaN in the result, null in to_dict().
    keep = test_y != 3
    result = linear_probe(train_x, train_y, test_x[keep], test_y[keep], num_classes=10, epochs=30)
    assert math.isnan(result.per_class_accuracy[3])
    assert result.to_dict()["per_class_accuracy"][3] is None
    assert result.to_dict()["accuracy"] == result.accuracy


def test_probe_rejects_bad_labels():
    x, y = blobs(5)
    with pytest.raises(UserError, match="out of range"):
        linear_probe(x, y, x, y, num_classes=2)
    with pytest.raises(UserError, match=">= 0"):
        knn_accuracy(x, y - 1, x, y)
    with pytest.raises(UserError, match="differ in width"):
        linear_probe(x, y, x[:, :3], y)


# --------------------------------------------------------------------------- kNN


def test_knn_k1_is_the_nearest_neighbour():
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(50, 8, generator=gen), torch.randn(20, 8, generator=gen)
    train_y = torch.randint(0, 5, (50,), generator=gen)
    nearest = torch.nn.functional.normalize(test_x, dim=1) @ torch.nn.functional.normalize(train_x, dim=1).t()
    expected = train_y[nearest.argmax(dim=1)]
    pred = knn_predict(train_x, train_y, test_x, num_classes=5, k=1)
    assert torch.equal(pred, expected)
    result = knn_accuracy(train_x, train_y, test_x, expected, k=1, num_classes=5)
    assert result.accuracy == 1.0 and result.classifier == "knn"


def test_knn_weights_on_a_three_point_example():
    # Test point (1, 0). Train: (1, 0) labelled 0 (cosine 1), and (cos 30deg, +-sin 30deg)
    # labelled 1 (cosine 0.866 each); the norms do not matter (cosine similarity).
    angle = math.radians(30)
    train_x = torch.tensor([[2.0, 0.0], [math.cos(angle), math.sin(angle)], [3 * math.cos(angle), -3 * math.sin(angle)]])
    train_y = torch.tensor([0, 1, 1])
    test_x = torch.tensor([[1.0, 0.0]])
    # k=1: the nearest point alone.
    assert knn_predict(train_x, train_y, test_x, num_classes=2, k=1).item() == 0
    # k=3, temperature 1: class 0 gets e^1 = 2.72, class 1 gets 2 e^0.866 = 4.75 -> 1.
    assert math.exp(1) < 2 * math.exp(math.cos(angle))
    assert knn_predict(train_x, train_y, test_x, num_classes=2, k=3, temperature=1.0).item() == 1
    # k=3, temperature 0.1: class 0 gets e^10 = 22026, class 1 gets 2 e^8.66 = 11536 -> 0.
    assert math.exp(10) > 2 * math.exp(10 * math.cos(angle))
    assert knn_predict(train_x, train_y, test_x, num_classes=2, k=3, temperature=0.1).item() == 0
    # k=2 (one of each) -> the closer one wins whatever the temperature; k > N is clamped.
    assert knn_predict(train_x, train_y, test_x, num_classes=2, k=2, temperature=1.0).item() == 0
    assert knn_predict(train_x, train_y, test_x, num_classes=2, k=50, temperature=1.0).item() == 1


def test_knn_on_blobs_and_chunking_does_not_change_predictions():
    train_x, train_y = blobs(100, seed=0)
    test_x, test_y = blobs(50, seed=1)
    result = knn_accuracy(train_x, train_y, test_x, test_y, k=20)
    assert result.accuracy == 1.0 and len(result.per_class_accuracy) == 4
    a = knn_predict(train_x, train_y, test_x, num_classes=4, k=200, chunk=7)
    b = knn_predict(train_x, train_y, test_x, num_classes=4, k=200, chunk=1024)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- run_probe


class RecordingHooks(NullHooks):
    def __init__(self):
        self.steps = []
        self.started = None

    def on_start(self, total_steps, info):
        self.started = (total_steps, info)

    def on_step(self, step, metrics):
        self.steps.append((step, dict(metrics)))


@pytest.fixture(scope="module")
def digits_encoder(tmp_path_factory):
    """A random convnet_small saved as a run folder, at 16 px."""
    torch.manual_seed(0)
    run_dir = tmp_path_factory.mktemp("encoder")
    encoder = build_encoder("convnet_small", True).eval()
    save_encoder(encoder, run_dir, {
        "encoder": "convnet_small", "small_stem": True, "image_size": 16,
        "mean": (0.3, 0.3, 0.3), "std": (0.4, 0.4, 0.4), "config": {}, "metrics": {},
    })
    return run_dir


@pytest.mark.parametrize("classifier", ["logistic", "knn"])
def test_run_probe_on_builtin_digits(digits_encoder, classifier):
    config = ProbeConfig(
        train={"source": "builtin:digits", "split": "train"},
        test={"source": "builtin:digits", "split": "test"},
        classifier=classifier, device="cpu", k=20,
    )
    hooks = RecordingHooks()
    result = run_probe(digits_encoder, config, DataEnv(), hooks=hooks)
    assert result.classifier == classifier
    assert result.accuracy > 0.3  # random features, still far above chance (0.1)
    assert result.num_train == 1437 and result.num_test == 360
    assert len(result.per_class_accuracy) == 10
    assert result.classes is None or len(result.classes) == 10
    parts = (result.load_seconds, result.extract_seconds, result.classifier_seconds)
    assert all(p is not None and p >= 0 for p in parts) and result.seconds >= sum(parts)
    assert hooks.started[0] == 3 and [s for s, _ in hooks.steps] == [1, 2, 3]
    assert hooks.steps[-1][1]["accuracy"] == result.accuracy
    d = result.to_dict()
    assert d["accuracy"] == result.accuracy and d["classifier"] == classifier


def test_run_probe_requires_labels(digits_encoder, tmp_path):
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8))
    config = ProbeConfig(train=str(path), test=str(path), device="cpu")
    with pytest.raises(UserError, match="has no labels: use class sub-folders or y in the npz"):
        run_probe(digits_encoder, config, DataEnv())


class StopAfter(RecordingHooks):
    """Says stop once `polls` calls of should_stop have said go on."""

    def __init__(self, polls: int):
        super().__init__()
        self.polls_left = polls
        self.polls = 0

    def should_stop(self):
        self.polls += 1
        self.polls_left -= 1
        return self.polls_left < 0


@pytest.mark.parametrize("classifier", ["logistic", "knn"])
def test_run_probe_stops_when_the_hooks_say_so(digits_encoder, classifier):
    # Issue 9, item 11: a probe never polled should_stop, so it could not be cancelled or capped.
    config = ProbeConfig(train={"source": "builtin:digits", "max_images": 300},
                         test={"source": "builtin:digits", "split": "test", "max_images": 100},
                         classifier=classifier, device="cpu", batch_size=100, k=5, epochs=10)
    counting = StopAfter(10**9)
    run_probe(digits_encoder, config, DataEnv(), hooks=counting)
    assert counting.polls >= 7  # both loads, every batch (3 + 1 at 100), the classifier
    first = StopAfter(0)
    with pytest.raises(StopRequested):
        run_probe(digits_encoder, config, DataEnv(), hooks=first)
    assert first.steps == []
    last = StopAfter(counting.polls - 1)  # the classifier's last poll
    with pytest.raises(StopRequested):
        run_probe(digits_encoder, config, DataEnv(), hooks=last)
    assert [s for s, _ in last.steps] == [1, 2]  # stopped in the classifier, with no result
