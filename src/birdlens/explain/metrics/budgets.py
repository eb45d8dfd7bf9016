"""The default budgets of ``explain-eval`` in one torch-free place: :class:`EvalSettings` and the CLI's option
defaults both read them (the study's explain-eval stage uses ``EvalSettings`` unless its ``params`` say
otherwise).

Each was cut from the cost the issue measured (675 s for 2 photos) to the smallest value whose conclusions
were measured to match the full computation; the measurements are in docs/benchmarks.md,
"The cost of measuring (issue 24)":

* ``SANITY_POINTS``: cascade points that are explained. The verdict reads only the last one (every weight
  re-initialised); the cascade re-initialises every stage with the same seeds whatever the number of points,
  so the final correlation, and the verdict, are the same at 2 points as at 4, for half the re-explanations.
"""

from __future__ import annotations

EVAL_STEPS = 224  # RISE's resolution
SANITY_N = 8
SANITY_POINTS = 2
STABILITY_N = 8
STABILITY_SEEDS = (0, 1, 2, 3, 4)
