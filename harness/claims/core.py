"""What every verdict rule shares: the claim and verdict records, row selection by name, and the decision against
a threshold from a figure's interval."""

from dataclasses import dataclass, field

from harness.measure.intervals import Interval


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    made_by: str
    tests: str
    rule: str
    params: dict


@dataclass
class Verdict:
    claim: Claim
    verdict: str  # supported | not supported | inconclusive | skipped
    reason: str
    figures: dict = field(default_factory=dict)


def find(rows: list[dict], metric: str, *, step: str | None = None, where: dict | None = None,
         **fields) -> dict | None:
    """The first ok row of `metric` whose fields equal `fields`, whose params hold `where` and whose engine step is
    `step` (None: the default settings, a row with no step)."""
    for row in select(rows, metric, step=step, where=where, **fields):
        return row
    return None


def select(rows: list[dict], metric: str, *, step: str | None = None, where: dict | None = None,
           **fields) -> list[dict]:
    """Every row `find` would accept, in file order."""
    where = where or {}
    return [row for row in rows if row.get("status") == "ok" and row.get("metric") == metric
            and row["params"].get("engine_step") == step and all(row.get(k) == v for k, v in fields.items())
            and all(row["params"].get(k) == v for k, v in where.items())]


def models(rows: list[dict]) -> list[str]:
    """The run's models, in the order their rows come."""
    return list(dict.fromkeys(row["model"] for row in rows if row.get("model")))


def profile_spec(rows: list[dict], name: str):
    """A profile figure the rows carry (price_usd_per_hour, interconnect); None where no row has it."""
    return next((row["profile_specs"][name] for row in rows if (row.get("profile_specs") or {}).get(name)), None)


def decide(estimate: Interval, threshold: float, supported_when: str) -> str:
    """supported when the whole interval is on the claim's side of `threshold` ('above' or 'below'), not supported
    when it is wholly on the other side, inconclusive when it reaches the threshold."""
    side = estimate.side(threshold)
    if side == "spans":
        return "inconclusive"
    return "supported" if side == supported_when else "not supported"
