"""mixkit.eval: accuracy, calibration and adversarial robustness of trained classifiers.

``mixkit-eval RUN_DIR`` (also ``python -m mixkit.eval``) evaluates a mixkit-train run; the pieces are
usable on their own: ``ClassificationMetrics`` (top-1, top-5, NLL, ECE), ``fgsm`` / ``pgd`` (L-inf,
pixel space) on a ``NormalizedModel``, ``evaluate`` (one pass doing both) and
``plot_reliability_diagram``; weakly supervised localization (``mixkit-eval --localization``):
``class_activation_maps``, ``boxes_from_cam``, ``LocalizationMetrics`` and ``localize`` (Choe et al. 2020's
MaxBoxAcc, top-1 and GT-known localization).
"""

from .attacks import NormalizedModel, default_pgd_step_size, fgsm, pgd
from .cam import class_activation_maps
from .cli import main
from .evaluate import AttackConfig, EvalResult, evaluate
from .localization import LocalizationMetrics, boxes_from_cam, cam_thresholds, localize
from .metrics import (
    DEFAULT_BINS,
    CalibrationBins,
    ClassificationMetrics,
    calibration_bins,
    expected_calibration_error,
    topk_correct,
)
from .reliability import plot_reliability_diagram

__all__ = [
    "DEFAULT_BINS",
    "AttackConfig",
    "CalibrationBins",
    "ClassificationMetrics",
    "EvalResult",
    "LocalizationMetrics",
    "NormalizedModel",
    "boxes_from_cam",
    "calibration_bins",
    "cam_thresholds",
    "class_activation_maps",
    "default_pgd_step_size",
    "evaluate",
    "expected_calibration_error",
    "fgsm",
    "localize",
    "pgd",
    "plot_reliability_diagram",
    "main",
    "topk_correct",
]
