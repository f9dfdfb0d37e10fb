"""Plaintext models, the sigmoid polynomial and the optimiser shared with encrypted training."""

from fedmarket.models.kinds import KIND_NAMES, KINDS, ModelKind, TaskLabels, get_kind
from fedmarket.models.linear import (
    LinearRegression,
    LogisticRegression,
    Model,
    OneVsRest,
    load_model,
)
from fedmarket.models.optim import NesterovConfig, NesterovGD
from fedmarket.models.persist import ModelFormatError
from fedmarket.models.scaling import FeatureScaler
from fedmarket.models.sigmoid import DEFAULT_SIGMOID, SigmoidPolynomial
from fedmarket.models.training import (
    EpochRecord,
    IntervalGuard,
    TrainConfig,
    TrainResult,
    encode_labels,
    fit_plaintext,
    gradient_sums,
    model_from_weights,
    score,
)

__all__ = [
    "DEFAULT_SIGMOID",
    "KINDS",
    "KIND_NAMES",
    "EpochRecord",
    "FeatureScaler",
    "IntervalGuard",
    "LinearRegression",
    "LogisticRegression",
    "Model",
    "ModelFormatError",
    "ModelKind",
    "NesterovConfig",
    "NesterovGD",
    "OneVsRest",
    "SigmoidPolynomial",
    "TaskLabels",
    "TrainConfig",
    "TrainResult",
    "encode_labels",
    "fit_plaintext",
    "get_kind",
    "gradient_sums",
    "load_model",
    "model_from_weights",
    "score",
]
