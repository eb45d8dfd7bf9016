"""Measuring explanation quality: which explanation of *this* model can a user trust?

Every metric returns one value per image and declares whether higher or lower is better
(:class:`~birdlens.explain.metrics.base.Direction`); means come with seeded 95% bootstrap intervals and every
method is shown beside two content-free baselines (a random map and a centred Gaussian).

=============================  ==========  ==========================================================================
metric                         better      what it measures
=============================  ==========  ==========================================================================
``deletion``                   lower       AUC of the class probability while deleting pixels most-important-first
``insertion``                  higher      AUC while inserting pixels into a blurred image (both: RISE, BMVC 2018)
``pointing_game``              higher      is the map's maximum inside the object box/mask
``energy_inside``              higher      share of positive map energy inside the object box/mask
``part_rank_corr``             higher      Spearman between per-part map mass and true part importance (FunnyBirds)
``top_part_key``               higher      is the top part one of the class's distinguishing parts
``key_part_share``             higher      share of on-bird map mass on the distinguishing parts
``background_independence``    higher      map mass that stays on the bird when its background is replaced
``target_sensitivity``         higher      two-bird image: each class's map lies on its own bird (both: FunnyBirds)
``sanity_rank_corr``           lower       rank corr. of maps before/after full weight randomisation (Adebayo 2018)
``stability``                  higher      top-10% region Jaccard across 5 seeds (LIME, SHAP)
``road_morf``                  lower       mean score change imputing the most relevant pixels (ROAD), opt-in
``road_lerf``                  higher      the same for the least relevant pixels, opt-in
``infidelity``                 lower       error of map . noise predicting the score change (Yeh 2019), opt-in
``max_sensitivity``            lower       largest relative map change under input noise, opt-in
``avg_sensitivity``            lower       mean relative map change under input noise, opt-in
``local_lipschitz``            lower       largest map change per input change, opt-in
``random_logit``               lower       SSIM of the map vs the map of a random other class (Sixt 2020), opt-in
``sparseness``                 higher      Gini index of the absolute map
``complexity``                 lower       entropy of the absolute map
=============================  ==========  ==========================================================================

The opt-in ones are selected by name (:mod:`~birdlens.explain.metrics.selection`); ``sparseness`` and
``complexity`` are selected by default.

The flow: :func:`evaluate_explanations` (what ``birdlens explain-eval`` and the study runner call) explains a
seeded sample of images with each method, scores every applicable metric, bootstraps, ranks and writes
``results.json`` plus figures.
"""

from birdlens.utils.lazy import lazy_exports

# Lazy exports: `birdlens --help` must not pay for importing torch (docs/benchmarks.md#cli-start-up).
_LAZY = {
    "BASELINES": "birdlens.explain.metrics.baselines",
    "BackgroundIndependence": "birdlens.explain.metrics.variants",
    "AvgSensitivity": "birdlens.explain.metrics.robustness",
    "Category": "birdlens.explain.metrics.base",
    "Complexity": "birdlens.explain.metrics.complexity",
    "Infidelity": "birdlens.explain.metrics.infidelity",
    "LocalLipschitz": "birdlens.explain.metrics.robustness",
    "MaxSensitivity": "birdlens.explain.metrics.robustness",
    "RandomLogit": "birdlens.explain.metrics.random_logit",
    "RoadLerf": "birdlens.explain.metrics.road",
    "RoadMorf": "birdlens.explain.metrics.road",
    "Sparseness": "birdlens.explain.metrics.complexity",
    "category_winners": "birdlens.explain.metrics.summary",
    "Curves": "birdlens.explain.metrics.perturbation",
    "DEFAULT_STEPS": "birdlens.explain.metrics.perturbation",
    "Deletion": "birdlens.explain.metrics.perturbation",
    "Direction": "birdlens.explain.metrics.base",
    "EnergyInside": "birdlens.explain.metrics.localisation",
    "FAIL_THRESHOLD": "birdlens.explain.metrics.sanity",
    "Insertion": "birdlens.explain.metrics.perturbation",
    "KeyPartShare": "birdlens.explain.metrics.parts",
    "Metric": "birdlens.explain.metrics.base",
    "PartRankCorrelation": "birdlens.explain.metrics.parts",
    "PointingGame": "birdlens.explain.metrics.localisation",
    "SanityRankCorrelation": "birdlens.explain.metrics.sanity",
    "Stability": "birdlens.explain.metrics.stability",
    "TargetSensitivity": "birdlens.explain.metrics.variants",
    "TopPartIsKey": "birdlens.explain.metrics.parts",
    "auc": "birdlens.explain.metrics.perturbation",
    "available_metrics": "birdlens.explain.metrics.base",
    "baseline_maps": "birdlens.explain.metrics.baselines",
    "bootstrap_ci": "birdlens.explain.metrics.bootstrap",
    "cascading_randomisation": "birdlens.explain.metrics.sanity",
    "centre_maps": "birdlens.explain.metrics.baselines",
    "evaluate_explanations": "birdlens.explain.metrics.evaluate",
    "energy_share": "birdlens.explain.metrics.localisation",
    "evaluate_class_evidence": "birdlens.explain.metrics.class_evidence",
    "gaussian_blur": "birdlens.explain.metrics.perturbation",
    "get_metric": "birdlens.explain.metrics.base",
    "metric_info": "birdlens.explain.metrics.base",
    "paired_difference": "birdlens.explain.metrics.bootstrap",
    "part_masses": "birdlens.explain.metrics.parts",
    "perturbation_curves": "birdlens.explain.metrics.perturbation",
    "pointing_game": "birdlens.explain.metrics.localisation",
    "random_maps": "birdlens.explain.metrics.baselines",
    "randomisation_stages": "birdlens.explain.metrics.sanity",
    "rank_methods": "birdlens.explain.metrics.summary",
    "register_metric": "birdlens.explain.metrics.base",
    "sanity_verdict": "birdlens.explain.metrics.sanity",
    "seed_stability": "birdlens.explain.metrics.stability",
    "summarise": "birdlens.explain.metrics.summary",
    "topk_jaccard": "birdlens.explain.metrics.stability",
    "true_part_importance": "birdlens.explain.metrics.parts",
}

__getattr__, __all__ = lazy_exports(__name__, _LAZY)
