"""The Recorder turns a scenario's measurements into result rows, one figure per row, and emits them at once."""

import math
from collections.abc import Callable

from harness.measure.energy import EnergyCounter
from harness.measure.intervals import interval
from harness.measure.metrics import metric
from harness.measure.roofline import Limits
from harness.measure.stats import RepetitionPolicy, Series, summarize
from harness.results.schema import make_row


class Recorder:
    """What a scenario measures with: the repetition policy, the hardware's limits (peaks and price) and the energy
    counter (None where the machine has none); and where its figures go."""

    def __init__(self, context: dict, policy: RepetitionPolicy, emit: Callable[[dict], None],
                 limits: Limits | None = None, energy: EnergyCounter | None = None):
        self.context = context
        self.policy = policy
        self.limits = limits or Limits()
        self.energy = energy
        self._emit = emit

    def figure(self, name: str, samples: list, params: dict | None = None, value: float | None = None,
               series: Series | None = None, **stats_extra) -> None:
        """Records one figure from its raw samples: value = median unless given; stats from summarize(). A figure
        measured from a policy's repetitions (`series`) carries how they were taken, the relative half-width of its
        95% interval and, where the policy had a target, whether that half-width is within it."""
        definition = metric(name)
        stats = {**summarize(samples), **(series.stats() if series else {}), **stats_extra}
        if value is None:
            value = stats.get("median")
        row = make_row(self.context, metric=name, unit=definition.unit, formula=definition.formula, value=value,
                       params=params or {}, stats=stats, samples=samples)
        if series and value is not None:
            half = interval(row).relative_half_width
            row["stats"]["half_width"] = half if math.isfinite(half) else None
            row["stats"]["converged"] = half <= series.target_ci if series.target_ci is not None else None
        self._emit(row)
