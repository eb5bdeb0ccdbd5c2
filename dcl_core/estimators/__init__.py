"""scikit-learn-style estimators: `DCL`, `DCLW` and `SimCLR` train with the engine and transform
images into features (`from dcl_core.estimators import DCL`). See `dcl_core.estimators.base`."""

from dcl_core.estimators.base import DCL, DCLW, ContrastiveEstimator, SimCLR

__all__ = ["DCL", "DCLW", "SimCLR", "ContrastiveEstimator"]
