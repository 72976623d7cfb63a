"""The Recorder turns a scenario's measurements into result rows, one figure per row, and emits them at once."""

from collections.abc import Callable

from harness.measure.energy import EnergyCounter
from harness.measure.metrics import metric
from harness.measure.roofline import Limits
from harness.measure.stats import RepetitionPolicy, summarize
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
               **stats_extra) -> None:
        """Records one figure from its raw samples: value = median unless given; stats from summarize()."""
        definition = metric(name)
        stats = {**summarize(samples), **stats_extra}
        if value is None:
            value = stats.get("median")
        self._emit(make_row(
            self.context, metric=name, unit=definition.unit, formula=definition.formula, value=value,
            params=params or {}, stats=stats, samples=samples,
        ))
