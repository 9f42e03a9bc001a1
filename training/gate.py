"""The promotion gate: configurable rules over champion/challenger metrics -> promote or keep.

    decide(eval_result, GateRules()) -> {"decision": "promote" | "keep", "reasons": [...]}

Every rule that fails adds a reason; the challenger is promoted only when none fails. With no
champion adapter (first model, base as champion) the same rules compare against the base.

The validation-loss rule only counts when the evaluation measured it on held-out images
(``val_split == "val"`` and ``val_images > 0``): a loss on the images the challenger was trained
on favours it. Without held-out images the challenger is kept, with that reason; a gate with
``require_held_out=False`` instead skips the rule (and says so) and lets the other rules decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GateRules:
    max_val_loss_increase: float = 0.02  # relative: challenger may be at most 2 % worse
    max_blank_images: int = 0
    max_stat_distance_increase: float = 0.10  # absolute, colour statistics vs the snapshot
    min_clip_score_delta: float = -0.5  # only when both have clip_score
    require_held_out: bool = True  # no held-out val loss -> keep (False: skip the val-loss rule)

    @classmethod
    def from_dict(cls, values: dict) -> GateRules:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown gate rule(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def decide(eval_result: dict, rules: GateRules | None = None) -> dict:
    rules = rules or GateRules()
    champ, chall = eval_result["metrics"]["champion"], eval_result["metrics"]["challenger"]
    failed, passed = [], []

    def check(ok: bool, good: str, bad: str) -> None:
        (passed if ok else failed).append(good if ok else bad)

    cv, pv = chall["val_loss"], champ["val_loss"]
    held_out = eval_result.get("val_split") == "val" and int(eval_result.get("val_images") or 0) > 0
    if not held_out:
        why = (f"no held-out validation images (val_split={eval_result.get('val_split')!r}, "
               f"val_images={eval_result.get('val_images')!r}): val_loss cannot show the challenger generalises")
        if rules.require_held_out:
            failed.append(why)
        else:
            passed.append(f"val_loss rule skipped: {why}")
    elif not math.isfinite(cv):
        failed.append(f"challenger val_loss is {cv}")
    else:
        limit = pv * (1 + rules.max_val_loss_increase) if math.isfinite(pv) else math.inf
        check(cv <= limit, f"val_loss {cv:.5f} within {limit:.5f}", f"val_loss {cv:.5f} above limit {limit:.5f} "
              f"(champion {pv:.5f} + {rules.max_val_loss_increase:.0%})")
    check(chall["blank_images"] <= rules.max_blank_images, f"blank images {chall['blank_images']}",
          f"{chall['blank_images']} blank eval image(s) > {rules.max_blank_images}")
    if "stat_distance" in chall and "stat_distance" in champ:
        limit = champ["stat_distance"] + rules.max_stat_distance_increase
        check(chall["stat_distance"] <= limit, f"stat_distance {chall['stat_distance']:.4f} within {limit:.4f}",
              f"stat_distance {chall['stat_distance']:.4f} above {limit:.4f}")
    if "clip_score" in chall and "clip_score" in champ:
        delta = chall["clip_score"] - champ["clip_score"]
        check(delta >= rules.min_clip_score_delta, f"clip_score delta {delta:+.3f}",
              f"clip_score dropped {delta:+.3f} < {rules.min_clip_score_delta}")
    decision = "keep" if failed else "promote"
    return {"decision": decision, "reasons": failed if failed else passed}
