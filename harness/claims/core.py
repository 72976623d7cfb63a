"""What every verdict rule shares: the claim and verdict records, row selection by name, and the decision against
a threshold from a figure's interval."""

from dataclasses import dataclass, field

from pydantic import field_validator, model_validator

from harness.measure.intervals import Interval
from harness.specs import Name, Spec, refuse


class Claim(Spec):
    """A claims.yaml entry: who claims what, what tests it, and the rule with its parameters (the entry's other
    fields, exactly those harness.claims.RULES names for the rule)."""

    id: Name
    claim: Name
    made_by: Name
    tests: Name
    rule: Name
    params: dict

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_fields(cls, data):
        from harness.claims import RULES

        if not isinstance(data, dict) or "params" in data or data.get("rule") not in RULES:
            return data
        params = {key: value for key, value in data.items() if key not in cls.model_fields}
        wanted = RULES[data["rule"]][1]
        for key in sorted(wanted - set(params)):
            raise refuse(f"missing required field '{key}'")
        for key in params:
            if key not in wanted:
                raise refuse("unknown field", (key,), f"{data['rule']} takes: {', '.join(sorted(wanted))}")
        return {**{k: v for k, v in data.items() if k in cls.model_fields}, "params": params}

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, rule: str) -> str:
        from harness.claims import RULES

        if rule not in RULES:
            raise refuse("unknown rule", hint=f"known: {', '.join(RULES)}")
        return rule


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
