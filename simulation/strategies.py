"""The retraining strategies ``make simulate`` compares: one entry each.

A strategy is what weekly_retrain is asked to do every week (its run conf: the DAG's Params),
plus, for the rule Sleeve replaced, what the operator did with the result. A new strategy
(a preference objective, a canary) is one more entry here; the loop does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    retrain: dict | None = field(default=None)  # weekly_retrain run conf; None: never retrain
    generate: dict = field(default_factory=dict)  # batch_generate run conf beyond the plan's
    promote_always: bool = False  # promote every trained model, whatever the gate said


STRATEGIES = {s.name: s for s in (
    Strategy("none", "no retraining: the base model all along"),
    Strategy("seed", "the original service's rule: fine-tune on every generated image rated >= 3, promote always",
             retrain={"min_rating": 3.0, "include_covers": False, "replay": False, "canary": False}, promote_always=True),
    Strategy("sleeve", "Sleeve's offline loop: rating filter, gate, registry (the challenger goes straight to "
             "production)", retrain={"canary": False}),
    Strategy("dpo", "as sleeve, trained by Diffusion-DPO on the week's review pairs against production, the same "
             "GPU steps", retrain={"objective": "dpo", "canary": False}),
    # 60 users ask for 60 covers a week: at the default 20 % the canary would get 12 requests,
    # below canary_min_requests (20), and could never be promoted; half the week gives it 30.
    Strategy("canary", "Sleeve's default: the gate's winner serves half of next week's requests and the "
             "users' ratings decide", retrain={"canary": True}, generate={"canary_share": 0.5}),
)}
DEFAULT_STRATEGIES = ("none", "seed", "sleeve")


def get(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
