"""The one small classifier used by CAS and the augmentation ablation: a linear probe on frozen features.

Why a probe: every arm of the ablation must train the *same* classifier, many times (arms x budgets x
seeds), on a CPU. Standardised features + multinomial logistic regression (scikit-learn) fits in well under
a second on a few thousand 1280-d rows and is the standard transfer-learning baseline.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe(features: np.ndarray, labels: np.ndarray, seed: int = 0, C: float = 0.1) -> Pipeline:
    """Standardise + L2 logistic regression (``C`` 0.1: strong regularisation for tens of images per class)."""
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return clf.fit(features, labels)
