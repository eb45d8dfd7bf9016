"""Measuring explanation quality: which explanation of *this* model can a user trust?

Every metric returns one value per image and declares whether higher or lower is better
(:class:`~birdlens.explain.metrics.base.Direction`); means come with seeded 95% bootstrap intervals and every
method is shown beside two content-free baselines (a random map and a centred Gaussian).

=====================  ==========  ==========================================================================
metric                 better      what it measures
=====================  ==========  ==========================================================================
``deletion``           lower       AUC of the class probability while deleting pixels most-important-first
``insertion``          higher      AUC while inserting pixels into a blurred image (both: RISE, BMVC 2018)
``pointing_game``      higher      is the map's maximum inside the object box/mask
``energy_inside``      higher      share of positive map energy inside the object box/mask
``part_rank_corr``     higher      Spearman between per-part map mass and true part importance (FunnyBirds)
``top_part_key``       higher      is the top part one of the class's distinguishing parts
``key_part_share``     higher      share of on-bird map mass on the distinguishing parts
``sanity_rank_corr``   lower       rank corr. of maps before/after full weight randomisation (Adebayo 2018)
``stability``          higher      top-10% region Jaccard across 5 seeds (LIME, SHAP)
=====================  ==========  ==========================================================================

The flow: :func:`evaluate_explanations` (what ``birdlens explain-eval`` and the study runner call) explains a
seeded sample of images with each method, scores every applicable metric, bootstraps, ranks and writes
``results.json`` plus figures.
"""

from birdlens.explain.metrics.base import (
    Category,
    Direction,
    Metric,
    available_metrics,
    get_metric,
    metric_info,
    register_metric,
)
from birdlens.explain.metrics.baselines import BASELINES, baseline_maps, centre_maps, random_maps
from birdlens.explain.metrics.bootstrap import bootstrap_ci, paired_difference
from birdlens.explain.metrics.localisation import EnergyInside, PointingGame, energy_share, pointing_game
from birdlens.explain.metrics.parts import (
    KeyPartShare,
    PartRankCorrelation,
    TopPartIsKey,
    part_masses,
    true_part_importance,
)
from birdlens.explain.metrics.perturbation import (
    DEFAULT_STEPS,
    Curves,
    Deletion,
    Insertion,
    auc,
    gaussian_blur,
    perturbation_curves,
)
from birdlens.explain.metrics.sanity import (
    FAIL_THRESHOLD,
    SanityRankCorrelation,
    cascading_randomisation,
    randomisation_stages,
    sanity_verdict,
)
from birdlens.explain.metrics.stability import Stability, seed_stability, topk_jaccard
from birdlens.explain.metrics.summary import rank_methods, summarise

__all__ = [
    "BASELINES",
    "DEFAULT_STEPS",
    "FAIL_THRESHOLD",
    "Category",
    "Curves",
    "Deletion",
    "Direction",
    "EnergyInside",
    "Insertion",
    "KeyPartShare",
    "Metric",
    "PartRankCorrelation",
    "PointingGame",
    "SanityRankCorrelation",
    "Stability",
    "TopPartIsKey",
    "auc",
    "available_metrics",
    "baseline_maps",
    "bootstrap_ci",
    "cascading_randomisation",
    "centre_maps",
    "energy_share",
    "evaluate_explanations",
    "gaussian_blur",
    "get_metric",
    "metric_info",
    "paired_difference",
    "part_masses",
    "perturbation_curves",
    "pointing_game",
    "random_maps",
    "randomisation_stages",
    "rank_methods",
    "register_metric",
    "sanity_verdict",
    "seed_stability",
    "summarise",
    "topk_jaccard",
    "true_part_importance",
]


def __getattr__(name: str):  # type: ignore[no-untyped-def]
    # the evaluator pulls in models, data and explainers: import it only when asked for
    if name == "evaluate_explanations":
        from birdlens.explain.metrics.evaluate import evaluate_explanations

        return evaluate_explanations
    raise AttributeError(name)
