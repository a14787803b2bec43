"""mixkit.eval: accuracy, calibration and adversarial robustness of trained classifiers.

``mixkit-eval RUN_DIR`` (also ``python -m mixkit.eval``) evaluates a mixkit-train run; the pieces are
usable on their own: ``ClassificationMetrics`` (top-1, top-5, NLL, ECE), ``fgsm`` / ``pgd`` (L-inf,
pixel space) on a ``NormalizedModel``, ``evaluate`` (one pass doing both) and
``plot_reliability_diagram``; weakly supervised localization (``mixkit-eval --localization``):
``class_activation_maps``, ``boxes_from_cam``, ``LocalizationMetrics`` and ``localize`` (Choe et al. 2020's
MaxBoxAcc, top-1 and GT-known localization); out-of-distribution detection (``mixkit-eval --ood``,
``--ood-dir``): ``OODScorer`` (MSP, energy, ODIN, Mahalanobis through pytorch-ood), ``ood_metrics`` (AUROC,
FPR95, AUPR-in/out, detection error), the offline sets ``builtin_ood_set`` / ``folder_ood_set`` and
``plot_ood_histograms``.
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
from .ood import (
    DEFAULT_OOD_SCORES,
    OOD_METRICS,
    OOD_SCORES,
    OODScorer,
    energy_score,
    fit_mahalanobis,
    msp_score,
    ood_metrics,
    score_batches,
)
from .ood_data import OOD_SETS, OODSet, builtin_ood_set, folder_ood_set
from .oodfigure import plot_ood_histograms
from .reliability import plot_reliability_diagram

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_OOD_SCORES",
    "OOD_METRICS",
    "OOD_SCORES",
    "OOD_SETS",
    "AttackConfig",
    "CalibrationBins",
    "ClassificationMetrics",
    "EvalResult",
    "LocalizationMetrics",
    "NormalizedModel",
    "OODScorer",
    "OODSet",
    "boxes_from_cam",
    "builtin_ood_set",
    "calibration_bins",
    "cam_thresholds",
    "class_activation_maps",
    "default_pgd_step_size",
    "energy_score",
    "evaluate",
    "expected_calibration_error",
    "fgsm",
    "fit_mahalanobis",
    "folder_ood_set",
    "localize",
    "msp_score",
    "ood_metrics",
    "pgd",
    "plot_ood_histograms",
    "plot_reliability_diagram",
    "main",
    "score_batches",
    "topk_correct",
]
