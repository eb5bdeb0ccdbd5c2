"""The estimators' parameters and input checks, and the scikit-learn API checks that feed no
data; nothing here trains (tests/dcl_core/estimators/test_fit.py does)."""

from __future__ import annotations

import inspect
import signal
from functools import partial

import numpy as np
import pytest
import scipy.sparse
import sklearn.utils.estimator_checks as checks
import torch
from sklearn.base import clone

from dcl_core.config import AugmentConfig, TrainConfig
from dcl_core.errors import UserError
from dcl_core.estimators import DCL, DCLW, ContrastiveEstimator, SimCLR
from dcl_core.estimators.inputs import image_array, source_spec

ESTIMATORS = [DCL, DCLW, SimCLR]

RUN_AS_IS = [
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimator_repr",
    "check_no_attributes_set_in_init", "check_estimators_unfitted", "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order", "check_transformers_unfitted", "check_transformer_n_iter",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params", "check_fit1d",
    "check_estimator_sparse_tag", "check_estimator_sparse_array", "check_estimator_sparse_matrix",
]
"""scikit-learn's checks that apply to image input as they are: they feed no data, or data the
estimator must refuse (1-D, sparse)."""

ON_IMAGES = "fits 2-D tabular X (n_samples, n_features); its image-input form is test_fit.py::"
SKIPPED = {
    "check_fit_score_takes_y": ON_IMAGES + "test_fit_returns_self_and_takes_y",
    "check_estimators_fit_returns_self": ON_IMAGES + "test_fit_returns_self_and_takes_y",
    "check_estimators_overwrite_params": ON_IMAGES + "test_fit_leaves_parameters_alone",
    "check_dont_overwrite_parameters": ON_IMAGES + "test_fit_leaves_parameters_alone",
    "check_readonly_memmap_input": ON_IMAGES + "test_every_input_form_gives_the_same_features",
    "check_f_contiguous_array_estimator": ON_IMAGES + "test_every_input_form_gives_the_same_features",
    "check_transformer_data_not_an_array": ON_IMAGES + "test_every_input_form_gives_the_same_features",
    "check_estimators_pickle": ON_IMAGES + "test_pickle_round_trip",
    "check_pipeline_consistency": ON_IMAGES + "test_pipeline_and_fit_transform",
    "check_transformer_general": ON_IMAGES + "test_pipeline_and_fit_transform",
    "check_methods_sample_order_invariance": ON_IMAGES + "test_transform_is_per_image",
    "check_methods_subset_invariance": ON_IMAGES + "test_transform_is_per_image",
    "check_dict_unchanged": ON_IMAGES + "test_transform_is_per_image",
    "check_fit_idempotent": ON_IMAGES + "test_fit_is_idempotent",
    "check_fit_check_is_fitted": ON_IMAGES + "test_fit_is_idempotent",
    "check_estimators_empty_data_messages": "expects a message about 0 features of a 2-D X; empty image arrays are "
                                            "refused in test_refused_inputs",
    "check_fit2d_1sample": "expects sklearn's 1-sample message on 2-D X; one image is refused (fewer images than "
                           "batch_size) in test_fit.py::test_too_few_images",
    "check_estimators_dtypes": "fits float and int 2-D X; only uint8 images are taken (test_refused_inputs)",
    "check_dtype_object": "fits object 2-D X; only uint8 images are taken (test_refused_inputs)",
    "check_complex_data": "fits complex 2-D X; only uint8 images are taken (test_refused_inputs)",
    "check_estimators_nan_inf": "NaN and inf: uint8 images cannot hold them, float input is refused",
    "check_positive_only_tag_during_fit": "negative values: uint8 images cannot hold them",
    "check_n_features_in": "images have no feature count (n_features_in_ is for 2-D X)",
    "check_n_features_in_after_fitting": "images have no feature count (n_features_in_ is for 2-D X)",
    "check_fit2d_1feature": "2-D X is refused (test_refused_inputs)",
    "check_fit2d_predict1d": "2-D X is refused (test_refused_inputs)",
    "check_array_api_input": "array API namespaces other than numpy: X is numpy or torch",
}


class _TabularView(DCL):
    """DCL tagged as taking 2-D X: scikit-learn then lists every check it has for a transformer."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


def _check_name(check) -> str:
    while isinstance(check, partial):
        check = check.func
    return check.__name__


def test_every_sklearn_check_is_run_or_skipped_with_a_reason():
    listed = {_check_name(check) for _, check in checks.estimator_checks_generator(_TabularView(), legacy=True)}
    listed.add("check_parameters_default_constructible")  # scikit-learn runs it on its own estimators only
    assert listed == set(RUN_AS_IS) | set(SKIPPED)
    assert not set(RUN_AS_IS) & set(SKIPPED)


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("name", RUN_AS_IS)
def test_sklearn_check(cls, name):
    getattr(checks, name)(cls.__name__, cls(verbose=False, encoder="convnet_small"))


def test_images_are_not_tabular_data_to_sklearn():
    tags = DCL().__sklearn_tags__()
    assert not tags.input_tags.two_d_array and tags.input_tags.three_d_array
    assert tags.requires_fit and not tags.target_tags.required


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_parameters_are_the_config_fields_with_their_defaults(cls):
    sig = inspect.signature(cls)
    defaults = {name: p.default for name, p in sig.parameters.items()}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values())
    config, augment = TrainConfig(), AugmentConfig()
    for name in TrainConfig.model_fields:
        if name in ("method", "dataset", "augment") or (name == "sigma" and cls is not DCLW):
            assert name not in defaults
        elif name in ("encoder_kwargs", "export"):
            assert defaults[name] is None  # None: the config's empty default
        else:
            assert defaults[name] == getattr(config, name), name
    for name in AugmentConfig.model_fields:
        assert defaults[name] == getattr(augment, name), name
    assert defaults["image_size"] is None
    assert {"run_dir", "warm_start", "verbose"} <= set(defaults)
    assert "Parameters" in cls.__doc__ and "epochs" in cls.__doc__


def test_get_set_params_and_clone():
    est = DCLW(epochs=5, sigma=0.3, crop_scale=(0.2, 1.0), encoder_kwargs={"a": 1})
    params = est.get_params()
    assert params["epochs"] == 5 and params["sigma"] == 0.3 and params["crop_scale"] == (0.2, 1.0)
    copy = clone(est)
    assert copy is not est and copy.get_params() == params
    assert copy.encoder_kwargs is not est.encoder_kwargs
    copy.set_params(epochs=7, jitter_p=0.5)
    assert (copy.epochs, copy.jitter_p, est.epochs) == (7, 0.5, 5)
    assert repr(DCL(epochs=5)) == "DCL(epochs=5)"
    with pytest.raises(ValueError, match="Invalid parameter 'sigma'"):
        DCL().set_params(sigma=0.3)  # DCLW's alone


def test_unknown_parameter_names_the_close_one():
    with pytest.raises(TypeError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        DCL(epoch=5)
    with pytest.raises(TypeError):
        DCL(5)  # keyword-only
    with pytest.raises(TypeError, match="abstract"):
        ContrastiveEstimator()


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"epochs": 0}, "epochs=0"),
    ({"temperature": -1.0}, "temperature=-1.0"),
    ({"crop_scale": (0.5, 2.0)}, "crop_scale=(0.5, 2.0)"),
    ({"encoder": "resnet81"}, "did you mean 'resnet18'"),
    ({"epochs": 2, "warmup_epochs": 3}, "warmup_epochs (3.0) must be less than epochs"),
    ({"image_size": 3}, "image_size=3"),
])
def test_invalid_parameters_are_named_before_anything_is_written(kwargs, named, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError) as caught:
        DCL(run_dir=str(run_dir), verbose=False, **kwargs).fit(np.zeros((8, 8, 8), np.uint8))
    assert named in str(caught.value)
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(("X", "message"), [
    (np.zeros((10, 64), np.uint8), "a table of features, not images"),
    (np.zeros((10, 8, 8), np.float64), "dtype float64; pass uint8"),
    (torch.zeros(10, 3, 8, 8), "dtype torch.float32; pass uint8"),
    (np.zeros((10, 8, 8, 4), np.uint8), r"drop the alpha channel, e.g. X\[..., :3\]"),
    (np.zeros((10, 8, 8, 5), np.uint8), "images need 1 or 3 channels"),
    (np.zeros((0, 8, 8), np.uint8), "no images"),
    (np.zeros(10, np.uint8), "pass images as"),
    (np.array([object()] * 4), "pass images as"),
])
def test_refused_inputs(X, message):
    with pytest.raises(ValueError, match=message):
        DCL(verbose=False).fit(X)


def test_sparse_input_is_refused_with_a_type_error():
    with pytest.raises(TypeError, match="sparse"):
        image_array(scipy.sparse.csr_array(np.ones((4, 3), np.uint8)))


@pytest.mark.parametrize(("shape", "layout"), [
    ((5, 8, 8), "NHW"), ((5, 8, 8, 3), "NHWC"), ((5, 8, 8, 1), "NHWC"), ((5, 3, 8, 8), "NCHW"), ((5, 1, 8, 8), "NCHW"),
])
def test_layouts(shape, layout):
    assert image_array(np.zeros(shape, np.uint8))[1] == layout
    assert image_array(torch.zeros(shape, dtype=torch.uint8))[1] == layout


def test_sources_take_the_image_size_parameter():
    assert source_spec("builtin:digits", 16).image_size == 16
    assert source_spec({"source": "builtin:digits", "image_size": 32}, 16).image_size == 32
    with pytest.raises(UserError, match="unknown builtin dataset"):
        source_spec("builtin:nope", None)


def test_transform_before_fit_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        DCL().transform(np.zeros((2, 8, 8), np.uint8))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
