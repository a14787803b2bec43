"""Out-of-distribution detection: per-image scores of a classifier and the metrics that compare two sets.

Every score here is an *in-distribution score*: higher means "more like the training data", as in the papers
that define them. mixkit computes them with pytorch-ood's detectors (which return the negation, an outlier
score, higher = OOD) and flips the sign:

- ``msp``: maximum softmax probability, ``max_c softmax(f(x))_c`` (Hendrycks & Gimpel, ICLR 2017; the
  baseline of the AlignMixup paper); pytorch-ood's ``MaxSoftmax``.
- ``energy``: negative free energy, ``T log sum_c exp(f_c(x) / T)`` with T = 1 (Liu et al., NeurIPS 2020);
  pytorch-ood's ``EnergyBased``.
- ``odin``: the softmax probability at temperature T of the input moved by ``eps * sign`` of the gradient
  that raises it (Liang et al., ICLR 2018; T = 1000, eps = 0.0014 pixels by default, pytorch-ood's); one
  backward pass per image; pytorch-ood's ``ODIN`` on the pixel-space model, so eps is in pixels of [0, 1].
- ``mahalanobis``: minus half the smallest squared Mahalanobis distance of the penultimate features to the
  class means, with one covariance shared by the classes, fitted on the training split (Lee et al., NeurIPS
  2018, the single-layer score without their input preprocessing and layer ensemble); pytorch-ood's
  ``Mahalanobis``. Its covariance is the unnormalised scatter (not divided by the number of samples), which
  scales every distance by the same factor and changes no metric.

Metrics (``ood_metrics``), from the in-distribution scores of the ID and the OOD images, are fractions in
[0, 1] computed with pytorch-ood's ``metrics.functional``:

- ``auroc``: area under the ROC curve, the probability that a random ID image scores above a random OOD one.
- ``aupr_in`` / ``aupr_out``: area under the precision-recall curve with ID (resp. OOD, by the negated
  score) images as the positive class.
- ``fpr95``: the fraction of OOD images accepted as ID at the threshold that accepts 95% of the ID images
  (ID is the positive class, as in Hendrycks & Gimpel, Liang et al. and Liu et al.; pytorch-ood's own
  ``FPR95TPR`` takes OOD as positive, so the roles are swapped before calling it).
- ``detection_error``: ``min over thresholds of 0.5 (1 - TPR) + 0.5 FPR``, the error of the best threshold
  with equal priors (Liang et al.'s code; one minus Lee et al.'s detection accuracy); pytorch-ood has no
  function for it, so it is read off its ROC curve here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .attacks import NormalizedModel

__all__ = ["DEFAULT_OOD_SCORES", "OOD_METRICS", "OOD_SCORES", "OODScorer", "energy_score", "fit_mahalanobis",
           "msp_score", "ood_metrics", "penultimate_features", "score_batches"]

OOD_SCORES = ("msp", "energy", "odin", "mahalanobis")
"""Score names, in report order."""
DEFAULT_OOD_SCORES = ("msp", "energy")
"""What ``mixkit-eval --ood`` computes unless told: both come from one forward pass per image. ODIN costs a
backward and a second forward pass per image (and its T and eps were tuned on OOD data by its authors),
Mahalanobis a forward pass over the whole training split: both are opt-in (``--ood-scores``)."""
OOD_METRICS = ("auroc", "fpr95", "aupr_in", "aupr_out", "detection_error")
"""The keys of ``ood_metrics``."""
DEFAULT_ODIN_TEMPERATURE = 1000.0
DEFAULT_ODIN_EPS = 0.0014


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability per row of (N, classes) logits (higher: more in-distribution)."""
    from pytorch_ood.detector import MaxSoftmax

    return -MaxSoftmax.score(logits.float())


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Negative energy ``T logsumexp(logits / T)`` per row (higher: more in-distribution)."""
    from pytorch_ood.detector import EnergyBased

    return -EnergyBased.score(logits.float(), t=temperature)


def penultimate_features(model: NormalizedModel, x: torch.Tensor) -> torch.Tensor:
    """(B, D) pooled features before a timm model's classifier, for pixels ``x`` in [0, 1].

    Raises:
        ValueError: The wrapped model has no timm ``forward_features`` / ``forward_head``.
    """
    net = model.model
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        raise ValueError(f"{type(net).__name__} has no forward_features / forward_head: the Mahalanobis score "
                         "needs a timm model's pooled features (drop 'mahalanobis' from --ood-scores)")
    feats = net.forward_head(net.forward_features((x - model.mean) / model.std), pre_logits=True)
    return feats.flatten(1).float()


def fit_mahalanobis(model: NormalizedModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
                    num_classes: int, device: torch.device | str = "cpu"):
    """pytorch-ood's ``Mahalanobis`` detector fitted on the penultimate features of labelled training batches.

    Raises:
        ValueError: No batch, or a class with no image (the class means would be undefined).
    """
    from pytorch_ood.detector import Mahalanobis

    feats, labels = [], []
    model.eval()
    with torch.no_grad():
        for x, y in batches:
            feats.append(penultimate_features(model, x.to(device)).cpu())
            labels.append(y.cpu().long())
    if not feats:
        raise ValueError("the Mahalanobis score has no training image to fit the class means on")
    z, y = torch.cat(feats), torch.cat(labels)
    missing = sorted(set(range(num_classes)) - set(y.unique().tolist()))
    if missing:
        raise ValueError(f"the training split has no image of classes {missing[:10]}: the Mahalanobis score needs "
                         "every class's mean; fit it on the whole training split")
    return Mahalanobis(None).fit_features(z, y)


@dataclass
class OODScorer:
    """Computes the chosen in-distribution scores of batches of pixels.

    Attributes:
        model: Pixel-space classifier (``NormalizedModel``), in eval mode.
        scores: Names from ``OOD_SCORES``.
        odin_temperature: ODIN's temperature T.
        odin_eps: ODIN's step, in pixels of [0, 1].
        mahalanobis: A fitted detector (``fit_mahalanobis``); needed when 'mahalanobis' is in ``scores``.
    """

    model: NormalizedModel
    scores: Sequence[str] = DEFAULT_OOD_SCORES
    odin_temperature: float = DEFAULT_ODIN_TEMPERATURE
    odin_eps: float = DEFAULT_ODIN_EPS
    mahalanobis: object | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, NormalizedModel):
            raise TypeError(f"the OOD scores take a pixel-space model (NormalizedModel), got {type(self.model).__name__}")
        unknown = [s for s in self.scores if s not in OOD_SCORES]
        if unknown or not self.scores:
            raise ValueError(f"unknown OOD scores {unknown}: choose from {', '.join(OOD_SCORES)}")
        if self.odin_temperature <= 0:
            raise ValueError(f"the ODIN temperature must be > 0, got {self.odin_temperature}")
        if self.odin_eps < 0:
            raise ValueError(f"the ODIN step must be >= 0, got {self.odin_eps}")
        if "mahalanobis" in self.scores and self.mahalanobis is None:
            raise ValueError("the Mahalanobis score needs a fitted detector (fit_mahalanobis)")

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{score name: (B,) float scores on the CPU} of pixels ``x`` (B, C, H, W) in [0, 1]."""
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            logits = self.model(x).float()
        if not torch.isfinite(logits).all():
            raise ValueError("the model returned NaN or Inf logits; the weights or the input are broken")
        for name in self.scores:
            out[name] = getattr(self, f"_{name}")(x, logits).detach().float().cpu()
        return out

    def _msp(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return msp_score(logits)

    def _energy(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return energy_score(logits)

    def _odin(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        from pytorch_ood.detector import ODIN

        return -ODIN(self.model, eps=self.odin_eps, temperature=self.odin_temperature).predict(x)

    def _mahalanobis(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = penultimate_features(self.model, x).cpu()
        return -self.mahalanobis.predict_features(z)


def score_batches(scorer: OODScorer, batches: Iterable, *, device: torch.device | str = "cpu",
                  progress: bool = False, total: int | None = None, desc: str = "ood") -> dict[str, torch.Tensor]:
    """The scores of every image of ``batches`` (images, or (images, labels) pairs), concatenated per score."""
    from tqdm.auto import tqdm

    parts: dict[str, list[torch.Tensor]] = {name: [] for name in scorer.scores}
    for batch in tqdm(batches, total=total, desc=desc, unit="batch", disable=not progress, leave=False):
        x = batch[0] if isinstance(batch, tuple | list) else batch
        for name, s in scorer(x.to(device)).items():
            parts[name].append(s)
    if not parts[scorer.scores[0]]:
        raise ValueError(f"{desc}: no image to score")
    return {name: torch.cat(p) for name, p in parts.items()}


def ood_metrics(id_scores: torch.Tensor, ood_scores: torch.Tensor) -> dict[str, float]:
    """AUROC, FPR at 95% TPR, AUPR-in, AUPR-out and detection error (fractions) of in-distribution scores.

    Args:
        id_scores: (N,) scores of in-distribution images (higher: more in-distribution).
        ood_scores: (M,) scores of out-of-distribution images.

    Raises:
        ValueError: An empty set, or NaN scores.
    """
    from pytorch_ood.metrics import functional as pf

    s_id, s_ood = id_scores.detach().double().flatten().cpu(), ood_scores.detach().double().flatten().cpu()
    if not len(s_id) or not len(s_ood):
        raise ValueError(f"OOD metrics need images of both sets, got {len(s_id)} in-distribution and "
                         f"{len(s_ood)} out-of-distribution scores")
    if torch.isnan(s_id).any() or torch.isnan(s_ood).any():
        raise ValueError("the OOD scores contain NaN: the model's outputs are broken")
    scores = torch.cat([s_id, s_ood])
    # pytorch-ood: label < 0 marks the positive class "OOD", and larger scores mean more likely OOD.
    ood_positive = torch.cat([torch.zeros(len(s_id)), -torch.ones(len(s_ood))]).long()
    fpr, tpr, _ = pf.roc_curve(-scores, ood_positive)
    # FPR95 with ID as positive: ID images take the "OOD" label and keep the in-distribution score.
    id_positive = torch.cat([-torch.ones(len(s_id)), torch.zeros(len(s_ood))]).long()
    return {"auroc": float(pf.auroc(-scores, ood_positive)),
            "fpr95": float(pf.fpr_at_tpr(scores, id_positive, tpr=0.95)),
            "aupr_in": float(pf.aupr(-scores, ood_positive, positive="id")),
            "aupr_out": float(pf.aupr(-scores, ood_positive, positive="ood")),
            "detection_error": float((0.5 * (1 - tpr) + 0.5 * fpr).min())}

