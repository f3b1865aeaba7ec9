"""The statistical comparison of `spec.compare`: is the new revision worse than its baseline?

`compare_samples` takes the two samples (one value per range-query step, for the new revision and
for the baseline) and runs a one-sided Mann-Whitney U test (`scipy.stats.mannwhitneyu`, imported
here only when a policy has a comparison, so a daemon without one never loads scipy). Its answer is
a `Measurement` of the comparison's name:

* OK, value `worse` (bool), with `details`: `p` (the one-sided p-value), `effect` (the relative
  difference of the medians, `(median(new) - median(baseline)) / |median(baseline)|`, sign chosen
  so that positive is worse: 0.5 is 50% worse whichever the direction), `samples` (the smaller
  side's count), `newSamples`, `baselineSamples`, `newMedian`, `baselineMedian` and `superiority`
  (the common-language effect size U / (n_new · n_baseline): the chance that a random new sample
  is worse than a random baseline one, 0.5 when they are alike);
* INCONCLUSIVE: fewer than `minSamples` usable values (not NaN, not ±Inf) on either side, a
  baseline median of 0 (a relative change from 0 is undefined), or no p-value (every value equal).

`worse` is `p < 1 - confidence` AND `effect > margin`: significant *and* large enough to matter.
Never a pass by default: too little data is inconclusive, and the rules' `onInconclusive` decides.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from daemon.measurement import Measurement, Phase
from daemon.rules.model import ComparisonSpec, Direction


def usable(values: Sequence[float]) -> list[float]:
    """The finite values: NaN (0/0, no traffic at that step) and ±Inf tell nothing about the revision."""
    return [v for v in values if math.isfinite(v)]


def compare_samples(spec: ComparisonSpec, new: Sequence[float], baseline: Sequence[float]) -> Measurement:
    """The comparison of `new` against `baseline` (see the module docstring); values in the signal's unit."""
    new, baseline = usable(new), usable(baseline)
    counts: dict[str, float] = {"newSamples": float(len(new)), "baselineSamples": float(len(baseline)),
                                "samples": float(min(len(new), len(baseline)))}
    if min(len(new), len(baseline)) < spec.min_samples:
        return Measurement(Phase.INCONCLUSIVE, None,
                           f"too few samples to compare: {len(new)} of the new revision and {len(baseline)} of the "
                           f"baseline, {spec.min_samples} needed on each side (minSamples)", details=counts)
    new_median, base_median = statistics.median(new), statistics.median(baseline)
    counts.update(newMedian=new_median, baselineMedian=base_median)
    if base_median == 0:
        return Measurement(Phase.INCONCLUSIVE, None, "the baseline's median is 0: a change relative to nothing is "
                           "undefined", details=counts)
    from scipy.stats import mannwhitneyu  # here, not at the top: only daemons with a comparison load scipy

    alternative = "greater" if spec.direction is Direction.INCREASE else "less"
    answer = mannwhitneyu(new, baseline, alternative=alternative)
    p, u = float(answer.pvalue), float(answer.statistic)
    if math.isnan(p):
        return Measurement(Phase.INCONCLUSIVE, None, "the test gives no p-value (every sample is equal)",
                           details=counts)
    sign = 1.0 if spec.direction is Direction.INCREASE else -1.0
    effect = sign * (new_median - base_median) / abs(base_median)
    superiority = u / (len(new) * len(baseline))
    if spec.direction is Direction.DECREASE:
        superiority = 1.0 - superiority  # U counts new > baseline; here the worse side is the smaller one
    worse = p < 1 - spec.confidence and effect > spec.margin
    verdict = "worse" if worse else ("not significant" if p >= 1 - spec.confidence else "within the margin")
    message = (f"median {new_median:.4g} vs {base_median:.4g} of the baseline: {effect:+.0%} "
               f"(margin {spec.margin:.0%}), p={p:.3g} (one-sided Mann-Whitney U, {len(new)} and {len(baseline)} "
               f"samples, confidence {spec.confidence:g}): {verdict}")
    return Measurement(Phase.OK, worse, message,
                       details={**counts, "p": p, "effect": effect, "superiority": superiority})
