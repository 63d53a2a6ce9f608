"""Evaluation on DiaretDB1 (Gondal et al. §4.3): region proposals against expert ground truth, ROC and FROC.

Public API::

    from trainer.evaluate import EvaluationConfig, count_image, subset_metrics
    from trainer.evaluate.runner import evaluate_diaretdb1

``count_image`` and ``subset_metrics`` work on plain arrays (no dataset, no model); ``evaluate_diaretdb1`` runs a
predictor over the DiaretDB1 folder and writes metrics.json, report.md and the plots (docs/evaluation.md).
"""

from trainer.evaluate.config import EvaluationConfig
from trainer.evaluate.matching import GroundTruth, Match, match_regions
from trainer.evaluate.protocol import ImageCounts, count_image
from trainer.evaluate.summary import subset_metrics

__all__ = ["EvaluationConfig", "GroundTruth", "ImageCounts", "Match", "count_image", "match_regions",
           "subset_metrics"]
