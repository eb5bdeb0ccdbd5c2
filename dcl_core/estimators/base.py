"""scikit-learn estimators over the engine: `DCL(epochs=5).fit(images).transform(images)`.

`fit` trains with `dcl_core.training.train.fit` (the same losses, augmentation, device choice
and checkpoints as `dcl train` and the service) in a run folder; the fitted estimator holds the
encoder as `load_encoder` reads it back from that folder, so `transform` gives the features the
exported files give. `save`/`load` use the exported encoder format (encoder.safetensors +
encoder.json), which `load_encoder`, the CLI and the service read.
"""

from __future__ import annotations

import difflib
import json
import shutil
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from dcl_core.config import KnnMonitorConfig
from dcl_core.data.sources import DataEnv
from dcl_core.errors import UserError
from dcl_core.estimators import inputs, params
from dcl_core.estimators.progress import FitProgress, stop_on_interrupt

SCORE_FOLDS = 5
"""`score` classifies each fifth of X by its neighbours in the other four fifths."""


def _make_init(signature):
    def __init__(self, **kwargs):
        try:
            bound = signature.bind(self, **kwargs)
        except TypeError:
            known = list(signature.parameters)[1:]
            unknown = [name for name in kwargs if name not in known]
            hints = [f"{name!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(name, known, 1))
                     else repr(name) for name in unknown]
            raise TypeError(f"{type(self).__name__} has no parameter {', '.join(hints)}; "
                            f"its parameters: {', '.join(known)}") from None
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    __init__.__signature__ = signature
    return __init__


class ContrastiveEstimator(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """A contrastive encoder as a scikit-learn transformer: images in, features out.

    Use `DCL`, `DCLW` or `SimCLR` (the method is the class). Parameters are the fields of
    `dcl_core.config.TrainConfig`, flat (the augmentation's too), with its defaults; they are
    validated by that config when `fit` runs. Fitted attributes: `encoder_` (the encoder, as
    `load_encoder` returns it), `run_dir_`, `history_` (the metric rows of the run) and
    `train_result_` (the engine's `TrainResult`; None after `load`).
    """

    _method: ClassVar[str | None] = None
    _params: ClassVar[tuple[params.Param, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._method is None:
            return
        cls._params = params.parameters(cls._method)
        cls.__init__ = _make_init(params.signature(cls._params))
        cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n{params.docstring(cls._params)}\n"

    def __init__(self, **kwargs):
        raise TypeError("ContrastiveEstimator is abstract: use DCL, DCLW or SimCLR")

    # ------------------------------------------------------------------ scikit-learn protocol

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False  # images: (N, H, W[, C]) or (N, C, H, W), or a source
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = []  # uint8 in, float32 out
        tags.target_tags.required = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "encoder_")

    @property
    def _n_features_out(self) -> int:
        return int(self.encoder_.feature_dim)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_temp", None)  # the temporary run folder belongs to the original only
        return state

    # ------------------------------------------------------------------ fit

    def fit(self, X, y=None):
        """Pretrain an encoder on the images X (y is ignored: self-supervised). Ctrl-C stops at
        the next step with a checkpoint and raises KeyboardInterrupt; `warm_start=True` resumes."""
        values = self.get_params(deep=False)
        array_input = not inputs.is_source(X)
        images = inputs.image_array(X) if array_input else None  # a bad X is refused before any folder is made
        spec = inputs.source_spec(inputs.FIT_IMAGES if array_input else X, self.image_size)
        config = params.train_config(self._method, self._params, values, spec)  # checked before a folder is made
        run_dir = self._run_folder()
        data_file = run_dir / inputs.FIT_IMAGES
        if array_input:
            config = config.model_copy(update={"dataset": spec.model_copy(update={"source": str(data_file)})})
        progress = FitProgress(self.verbose, type(self).__name__)
        try:
            if array_input:
                inputs.write_fit_images(images, data_file)
            from dcl_core.training.train import fit as train

            with stop_on_interrupt(progress):
                result = train(config, run_dir, progress, self._data_env())
        finally:
            progress.close()
            if array_input:
                data_file.unlink(missing_ok=True)
        if result.stopped:
            raise KeyboardInterrupt(
                f"stopped at step {result.steps}/{result.total_steps}; the checkpoint is in {run_dir}: "
                "fit again with warm_start=True to resume"
            )
        if self.verbose:
            for warning in result.warnings:
                warnings.warn(warning, UserWarning, stacklevel=2)
        self._set_fitted(run_dir, result)
        return self

    def _run_folder(self) -> Path:
        """This fit's run folder: the last one to resume (warm_start), run_dir, or a new temporary one."""
        last = getattr(self, "_run", None)
        if self.warm_start and last is not None and (self.run_dir is None or Path(self.run_dir) == last):
            return last
        if self.run_dir is not None:
            from dcl_core.training.train import CHECKPOINT

            folder = Path(self.run_dir)
            if not self.warm_start and (folder / CHECKPOINT).exists():
                raise UserError(
                    f"run_dir={self.run_dir!r} holds a run already ({CHECKPOINT}); set warm_start=True to resume "
                    "it, or choose another run_dir (None: a temporary folder)"
                )
            self._forget_temp()
            self._run = folder
            return folder
        self._forget_temp()
        folder = Path(tempfile.mkdtemp(prefix="dcl-fit-"))
        self._temp = weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        self._run = folder
        return folder

    def _forget_temp(self) -> None:
        temp = getattr(self, "_temp", None)
        if temp is not None:
            temp()  # removes the folder of the previous fit, whose encoder is being replaced
            self._temp = None

    def _set_fitted(self, run_dir: Path, result) -> None:
        from dcl_core.export.encoder import load_encoder
        from dcl_core.training.device import resolve_device
        from dcl_core.training.train import METRICS

        self.encoder_ = load_encoder(run_dir, device=resolve_device(self.device))
        self.run_dir_ = run_dir
        self.train_result_ = result
        metrics = run_dir / METRICS
        self.history_ = [json.loads(line) for line in metrics.read_text().splitlines() if line] \
            if metrics.exists() else []

    def _data_env(self) -> DataEnv:
        return DataEnv(torchvision_root=Path(self.data_root) if self.data_root else None,
                       allow_download=bool(self.download),
                       cache_dir=Path(self.cache_dir) if self.cache_dir else None)

    # ------------------------------------------------------------------ use

    def transform(self, X) -> np.ndarray:
        """The encoder's features of X: float32 (N, feature_dim), in X's order."""
        check_is_fitted(self)
        from dcl_core.evaluation.features import extract_features
        from dcl_core.training.device import autocast_dtype

        images = inputs.transform_images(X, self.encoder_.meta, self._data_env())
        device = next(self.encoder_.parameters()).device
        feats = extract_features(self.encoder_, images, self.encoder_.transform, device=device,
                                 dtype=autocast_dtype(self.precision, device))
        return feats.cpu().numpy()

    def score(self, X, y) -> float:
        """Weighted-kNN top-1 accuracy (k=200, temperature 0.1: the usual SSL monitor, as the
        `knn` probe) of the features of X, each fifth classified by its neighbours in the rest."""
        from dcl_core.evaluation.knn import knn_accuracy

        feats = torch.from_numpy(self.transform(X))
        labels, num_classes = inputs.labels_of(y, feats.shape[0])
        n = feats.shape[0]
        if n < 2:
            raise UserError("score needs at least 2 labelled images")
        folds = min(SCORE_FOLDS, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.seed)))
        correct = 0.0
        for fold in range(folds):
            test = order[fold::folds]
            train = torch.ones(n, dtype=torch.bool)
            train[test] = False
            result = knn_accuracy(feats[train], labels[train], feats[test], labels[test],
                                  k=KnnMonitorConfig.model_fields["k"].default,
                                  temperature=KnnMonitorConfig.model_fields["temperature"].default,
                                  num_classes=num_classes)
            correct += result.accuracy * len(test)
        return correct / n

    def save(self, path) -> Path:
        """Write the encoder as `path/encoder.safetensors` + `path/encoder.json` (the exported format:
        `load_encoder(path)`, `dcl probe --encoder path`, `DCL.load(path)`). Returns the folder."""
        check_is_fitted(self)
        from dcl_core.export.encoder import save_encoder

        save_encoder(self.encoder_, Path(path), dict(self.encoder_.meta))
        return Path(path)

    @classmethod
    def load(cls, path, device: str = "auto") -> "ContrastiveEstimator":
        """A fitted estimator from exported encoder files (a run folder, a saved folder, a downloaded
        job). Its class and parameters are those of the config in encoder.json (DCL, DCLW or SimCLR
        by the method it was trained with); the encoder goes to `device`. The files hold no optimiser
        state: a later `fit` trains anew."""
        from dcl_core.export.encoder import load_encoder
        from dcl_core.training.device import resolve_device

        encoder = load_encoder(path, device=resolve_device(device))
        config = encoder.meta.get("config") or {}
        target = ESTIMATORS.get(config.get("method"), cls if cls._method else ESTIMATORS["dcl"])
        kwargs: dict[str, Any] = {}
        for p in target._params:
            section = {"train": config, "augment": config.get("augment") or {},
                       "data": config.get("dataset") or {}}.get(p.section, {})
            value = section.get(p.name)
            if p.name in section and not (p.omit_when_none and not value):
                kwargs[p.name] = tuple(value) if isinstance(value, list) and isinstance(p.default, tuple) else value
        kwargs["device"] = device
        estimator = target(**kwargs)
        estimator.encoder_ = encoder
        estimator.run_dir_ = Path(path)
        estimator.train_result_ = None
        estimator.history_ = []
        return estimator


class DCL(ContrastiveEstimator):
    """Decoupled contrastive learning (Yeh et al. 2021): InfoNCE with the positive pair left out
    of the denominator. `DCL(epochs=5).fit(images).transform(images)`."""

    _method = "dcl"


class DCLW(ContrastiveEstimator):
    """DCL with von Mises-Fisher weighted positives (Yeh et al. 2021); `sigma` is the weighting's
    temperature."""

    _method = "dclw"


class SimCLR(ContrastiveEstimator):
    """SimCLR's NT-Xent loss (Chen et al. 2020)."""

    _method = "simclr"


ESTIMATORS: dict[str, type[ContrastiveEstimator]] = {"dcl": DCL, "dclw": DCLW, "simclr": SimCLR}
