"""Choosing the decision threshold on the referable probability from labelled images (an operating point of the ROC).

``trainer export`` chooses the threshold it writes into the model card on the validation split; ``trainer evaluate``
chooses one the same way for a Keras run folder (a bundle brings its card's).

    choice = choose_threshold(labels, probs, "youden_j")     # {"threshold": 0.41, "sensitivity": ..., ...}
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def choose_threshold(labels: np.ndarray, probs: np.ndarray, method: str = "youden_j",
                     target_sensitivity: float = 0.9) -> dict:
    """Pick the decision threshold on the referable probability.

    Args:
        labels: int (N,) 1 = referable.
        probs: float (N,) referable probabilities of the model being deployed.
        method: ``"youden_j"`` (maximise sensitivity + specificity - 1) or ``"sensitivity_target"`` (the highest
            threshold whose sensitivity reaches ``target_sensitivity``).
        target_sensitivity: for ``"sensitivity_target"``.

    Returns:
        ``{"threshold", "method", "sensitivity", "specificity", "target_sensitivity"}``; with one class only the
        threshold is 0.5 and the method ``"fixed"``.
    """
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return {"threshold": 0.5, "method": "fixed", "sensitivity": None, "specificity": None,
                "target_sensitivity": None}
    fpr, tpr, thresholds = roc_curve(labels, probs)
    finite = np.isfinite(thresholds) & (thresholds > 0) & (thresholds < 1)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if method == "youden_j":
        i = int(np.argmax(tpr - fpr))
    elif method == "sensitivity_target":
        reaching = np.flatnonzero(tpr >= target_sensitivity)
        i = int(reaching[0]) if reaching.size else len(tpr) - 1
    else:
        raise ValueError(f"unknown threshold method {method!r}; use youden_j or sensitivity_target")
    return {"threshold": float(thresholds[i]), "method": method, "sensitivity": float(tpr[i]),
            "specificity": float(1 - fpr[i]),
            "target_sensitivity": target_sensitivity if method == "sensitivity_target" else None}
