"""The canary verdict: do the users rate the canary's covers better than production's?

    judge(canary_means, production_means, CanaryRules()) -> {"decision", "reason", "evidence"}
    settle_canary(warehouse, start, end, rules, now) -> the decision for the running canary

A challenger that passed the offline gate serves a share of a week's requests
(:func:`sleeve.registry.serves_canary`). The next weekly run compares, for the reviews of its
interval ``[start, end)``, the **per-request mean ratings** of the canary's requests with those
of production's requests made while the canary ran (a request's covers share a prompt and a
user, so the request, not the image, is the independent unit). The difference of the means gets
a two-sided Welch t interval at ``confidence``; the canary is promoted only when each arm has at
least ``min_requests`` rated requests and the interval's lower end is above ``min_lift`` stars.
Otherwise it is retired and the reason says which rule failed. The verdict is stored in
``canary_decisions`` (one row per canary), so a re-run of the interval returns it unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime

from sleeve import registry
from sleeve.warehouse import Warehouse

PROMOTE, RETIRE = "promote", "retire"

ARM_SQL = """
WITH per_user AS (
  SELECT image_id, user_id, AVG(rating) AS rating
  FROM reviews
  WHERE created_at >= @start AND created_at < @end AND rating BETWEEN 1 AND 5 AND user_id IS NOT NULL
  GROUP BY image_id, user_id
)
SELECT i.request_id, AVG(u.rating) AS rating
FROM images AS i
JOIN per_user AS u ON u.image_id = i.image_id
JOIN generation_requests AS g ON g.request_id = i.request_id
WHERE i.model_version = @version AND g.kind IN ('user', 'demo') AND i.created_at >= @since
GROUP BY i.request_id
ORDER BY i.request_id
"""


@dataclass(frozen=True)
class CanaryRules:
    confidence: float = 0.95
    min_requests: int = 20  # rated requests per arm
    min_lift: float = 0.0  # stars the interval's lower end must exceed

    def __post_init__(self):
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"canary_confidence must be in [0.5, 1) (got {self.confidence})")
        if self.min_requests < 2:
            raise ValueError(f"canary_min_requests must be >= 2 (got {self.min_requests}): an interval needs two")

    @classmethod
    def from_params(cls, params: dict) -> CanaryRules:
        return cls(**{f: params[f"canary_{f}"] for f in cls.__dataclass_fields__ if f"canary_{f}" in params})


def _mean_var(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def welch_interval(a: list[float], b: list[float], confidence: float) -> tuple[float, float, float, float]:
    """(mean(a) - mean(b), lower, upper, degrees of freedom): Welch's two-sided t interval."""
    from scipy.stats import t

    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    sa, sb = va / len(a), vb / len(b)
    diff, se = ma - mb, math.sqrt(sa + sb)
    if se == 0:
        return diff, diff, diff, float(len(a) + len(b) - 2)
    df = (sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1)) if sa and sb else \
        float(len(a) - 1 if sa else len(b) - 1)
    half = float(t.ppf(0.5 + confidence / 2, df)) * se
    return diff, diff - half, diff + half, df


def judge(canary: list[float], production: list[float], rules: CanaryRules | None = None) -> dict:
    """Promote or retire on the per-request mean ratings of the two arms."""
    rules = rules or CanaryRules()
    evidence = {"canary_requests": len(canary), "production_requests": len(production), "rules": asdict(rules),
                "canary_mean": round(sum(canary) / len(canary), 4) if canary else None,
                "production_mean": round(sum(production) / len(production), 4) if production else None}
    if min(len(canary), len(production)) < rules.min_requests:
        reason = (f"only {len(canary)} canary and {len(production)} production request(s) rated, fewer than "
                  f"canary_min_requests={rules.min_requests} per arm: not enough evidence that the canary is "
                  "better, retired")
        return {"decision": RETIRE, "reason": reason, "evidence": evidence}
    diff, low, high, df = welch_interval(canary, production, rules.confidence)
    evidence.update(diff=round(diff, 4), low=round(low, 4), high=round(high, 4), df=round(df, 2))
    stated = (f"canary {evidence['canary_mean']:.2f} vs production {evidence['production_mean']:.2f} stars: "
              f"{diff:+.2f} [{low:+.2f}, {high:+.2f}] {rules.confidence:.0%} Welch interval over per-request means "
              f"({len(canary)} canary, {len(production)} production requests)")
    if low > rules.min_lift:
        return {"decision": PROMOTE, "reason": f"{stated}: better (lower end above {rules.min_lift:+.2f}), promoted",
                "evidence": evidence}
    return {"decision": RETIRE, "reason": f"{stated}: not resolvably better (lower end at or below "
                                          f"{rules.min_lift:+.2f}), retired", "evidence": evidence}


def arm_ratings(warehouse: Warehouse, version: str, start: datetime, end: datetime, since: datetime) -> list[float]:
    rows = warehouse.query(ARM_SQL, {"version": version, "start": start, "end": end, "since": since})
    return [float(r["rating"]) for r in rows]


def decided(warehouse: Warehouse, start: datetime) -> dict | None:
    """The verdict already given for the interval starting at ``start``, if any."""
    rows = warehouse.query("SELECT * FROM canary_decisions WHERE interval_start = @start", {"start": start})
    if not rows:
        return None
    row = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in rows[0].items()}
    row["evidence"] = json.loads(row["evidence"] or "{}")
    return row


def assess(warehouse: Warehouse, start: datetime, end: datetime, rules: CanaryRules | None = None) -> dict | None:
    """The verdict for the running canary on ``[start, end)``'s reviews, without applying it
    (None: no canary). A verdict already given for this interval is returned as it was."""
    if (done := decided(warehouse, start)) is not None:
        return {**done, "applied": True}
    canary = registry.canary_version(warehouse, "style")
    if canary is None:
        return None
    since = canary["canary_started_at"] or start
    production = canary["canary_of"] or "base"
    verdict = judge(arm_ratings(warehouse, canary["version"], start, end, since),
                    arm_ratings(warehouse, production, start, end, since), rules)
    return {"version": canary["version"], "production_version": production, "interval_start": start.isoformat(),
            "interval_end": end.isoformat(), **verdict, "applied": False}


def approval_text(warehouse: Warehouse, verdict: dict) -> dict:
    """The verdict with ``body``: what a person approving the promotion sees (the users'
    verdict, the offline gate's reasons and numbers, the contact sheet)."""
    row = registry.get_version(warehouse, verdict["version"]) or {"metrics": {}}
    metrics = row["metrics"]
    run = warehouse.query("SELECT decision_reasons FROM training_runs WHERE run_id = @id",
                          {"id": row.get("training_run_id") or ""})
    gate = json.loads(run[0]["decision_reasons"] or "[]") if run else []
    lines = [f"**Users' verdict** ({verdict['interval_start'][:10]} week): {verdict['reason']}", "",
             f"**Offline gate** for {verdict['version']}:"] + [f"- {r}" for r in gate or ["(no reasons recorded)"]]
    lines += ["", f"**Contact sheet** (champion vs challenger on the eval prompts): "
                  f"{metrics.get('contact_sheet_uri') or 'none recorded'}"]
    return {**verdict, "body": "\n".join(lines)}


def apply(warehouse: Warehouse, verdict: dict, now: datetime, *, approved: bool | None = None) -> dict:
    """Record the verdict and move the registry: promote the canary or retire it. ``approved``
    False (a person refused, or the approval timed out) retires a canary the ratings favoured."""
    if verdict.get("applied"):
        return verdict
    decision, reason = verdict["decision"], verdict["reason"]
    if decision == PROMOTE and approved is False:
        decision, reason = RETIRE, f"{reason}; promotion not approved, retired"
    if decision == PROMOTE:
        registry.promote(warehouse, verdict["version"], now, reason=reason)
    else:
        registry.retire(warehouse, verdict["version"], reason, now)
    row = {"version": verdict["version"], "production_version": verdict["production_version"],
           "interval_start": verdict["interval_start"], "interval_end": verdict["interval_end"],
           "decision": decision, "reason": reason, "decided_at": now,
           "evidence": json.dumps(verdict["evidence"], sort_keys=True)}
    row["interval_start"], row["interval_end"] = (datetime.fromisoformat(str(row[k]))
                                                  for k in ("interval_start", "interval_end"))
    warehouse.upsert("canary_decisions", [row])
    return {**verdict, "decision": decision, "reason": reason, "applied": True}


def settle_canary(warehouse: Warehouse, start: datetime, end: datetime, rules: CanaryRules | None = None,
                  now: datetime | None = None) -> dict | None:
    """:func:`assess` then :func:`apply` (no approval step)."""
    verdict = assess(warehouse, start, end, rules)
    return apply(warehouse, verdict, now or end) if verdict else None
