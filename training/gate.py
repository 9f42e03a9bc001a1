"""The promotion gate: the challenger must beat the champion by a margin the evaluation resolves.

    decide(eval_result, GateRules()) -> {"decision": "promote" | "keep", "reasons": [...], "evidence": {...}}

The evidence is paired: the evaluation job computes each held-out image's diffusion loss under
both models with the same noise and noise levels (``eval_result["paired"]``). The effect is the
relative change of the mean loss, ``sum(challenger - champion) / sum(champion)`` (negative =
the challenger is better), with a percentile interval from a seeded paired bootstrap over the
images (``bootstrap_samples`` resamples, ``confidence``), so the same losses always give the
same interval. The rules, each a ``weekly_retrain`` Param:

- ``min_val_images``: fewer held-out images than this and the champion is kept: the evaluation
  cannot resolve a difference.
- val: the interval's upper end must be below ``-min_val_improvement`` (default 0: the whole
  interval below zero, i.e. resolvably better). An identical or noisy challenger is kept.
- preference (held-out pairs: two covers of one request whose user rated them apart): the
  *preference margin*, how much more the challenger lowered the preferred cover's loss than the
  dispreferred one's, ``sum((chall_w - champ_w) - (chall_l - champ_l)) / sum((champ_w + champ_l) / 2)``
  (negative = the challenger moved towards what users preferred), with its interval from a
  bootstrap over requests (a request's pairs share images). It needs ``min_pair_requests``.
  The liked-image loss alone cannot see what Diffusion-DPO learns (it moves the margin, not the
  liked images' loss): the challenger is better when either interval resolves below its bar,
  and is kept when either is resolvably worse (its lower end above zero).
- reference (earlier promoted weeks' held-out images, evidence that does not come from the week
  under suspicion): the interval's upper end must not exceed ``max_reference_degradation``
  (default 0: not worse on the reference; a margin lets a week of bad reviews through). With no reference yet, or fewer than
  ``min_reference_images``, the rule is skipped and the reason says so.
- reference preference (earlier promoted weeks' held-out pairs): the preference margin on them
  must not be resolvably worse (its lower end at most zero). A challenger trained on inverted
  pairs can still lower the loss of earlier weeks' liked images, so the image rule alone can
  let it through; the margin sees the direction. Not "resolvably better": an honest SFT week
  barely moves an earlier week's margin. When it *is* resolvably better, an unresolved reference
  loss (interval straddling the bar) is not decisive: Diffusion-DPO moves the gap between the
  covers, not the liked covers' loss, and an honest DPO week was kept at +0.5 % [-0.1 %, +1.2 %]
  with its margin at -1.0 % [-1.7 %, -0.3 %]. A resolvably worse reference loss always keeps.
  Skipped below ``min_pair_requests`` earlier requests with a pair.
- ``max_blank_images`` blank renders of the eval prompts; ``max_stat_distance_increase`` for the
  distance of the renders' colour statistics to the held-out images; ``min_clip_score_delta``
  when both models have a CLIP score.

The challenger is promoted only when no rule fails. The reasons always state the effect sizes
with their intervals, e.g. ``val loss -3.1 % [-5.0 %, -1.2 %] 95 % paired bootstrap over 24
held-out images (18 generated, 6 covers)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateRules:
    min_val_images: int = 4  # the paired interval decides; below 4 images it means little
    min_val_improvement: float = 0.0  # relative; the CI's upper end must be below minus this
    max_reference_degradation: float = 0.0  # relative; the CI's upper end on the reference at most this
    min_reference_images: int = 4
    min_pair_requests: int = 4  # held-out requests with a preference pair the margin needs
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    bootstrap_seed: int = 0
    max_blank_images: int = 0
    max_stat_distance_increase: float = 1.0  # absolute, colour statistics vs the held-out images: a collapse guard
    min_clip_score_delta: float = -0.5  # only when both have clip_score

    def __post_init__(self):
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1) (got {self.confidence}); e.g. 0.95")
        if self.bootstrap_samples < 100:
            raise ValueError(f"bootstrap_samples must be >= 100 (got {self.bootstrap_samples}); e.g. 2000")
        if self.min_val_images < 2 or self.min_reference_images < 2 or self.min_pair_requests < 2:
            raise ValueError("min_val_images, min_reference_images and min_pair_requests must be >= 2: "
                             "one image or request has no interval")

    @classmethod
    def from_dict(cls, values: dict) -> GateRules:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown gate rule(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_params(cls, params: dict) -> GateRules:
        """The rules among a DAG run's Params (other Params are ignored)."""
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})


def paired_effect(champion: list[float], challenger: list[float], rules: GateRules) -> dict:
    """Relative change of the mean loss and its paired bootstrap percentile interval."""
    import numpy as np

    a, b = np.asarray(champion, dtype=np.float64), np.asarray(challenger, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired losses must be two vectors of one length, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()) or a.sum() <= 0:
        return {"n": int(a.size), "effect": math.nan, "low": math.nan, "high": math.nan, "finite": False}
    rng = np.random.default_rng(rules.bootstrap_seed)
    draws = rng.integers(0, a.size, size=(rules.bootstrap_samples, a.size))
    ratios = (b - a)[draws].sum(axis=1) / a[draws].sum(axis=1)
    tail = (1 - rules.confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return {"n": int(a.size), "effect": float((b - a).sum() / a.sum()), "low": float(low), "high": float(high),
            "finite": True}


def preference_effect(pairs: dict, rules: GateRules) -> dict:
    """The preference margin (see the module docstring) with a bootstrap over requests."""
    champ, chall = pairs["champion"], pairs["challenger"]
    scale: dict[str, float] = {}
    moved: dict[str, float] = {}
    for won, lost, request in pairs["pairs"]:
        scale[request] = scale.get(request, 0.0) + (champ[won] + champ[lost]) / 2
        moved[request] = moved.get(request, 0.0) + (chall[won] - champ[won]) - (chall[lost] - champ[lost])
    requests = sorted(scale)
    # paired_effect's ratio of sums with per-request "champion" = scale, "challenger" = scale + margin
    effect = paired_effect([scale[r] for r in requests], [scale[r] + moved[r] for r in requests], rules)
    return {**effect, "pairs": len(pairs["pairs"])}


def _margin(pairs: dict | None, rules: GateRules, label: str, which: str) -> tuple[dict | None, str]:
    """The preference margin of one set of pairs and its description; (None, why not) when it
    has fewer than ``min_pair_requests`` requests with a pair, (None, "") when it has none."""
    n_requests = len({p[2] for p in (pairs or {}).get("pairs") or []})
    if not n_requests:
        return None, ""
    if n_requests < rules.min_pair_requests:
        return None, (f"only {n_requests} {which} request(s) with a rated pair, fewer than "
                      f"min_pair_requests={rules.min_pair_requests}")
    effect = preference_effect(pairs, rules)
    return effect, f"{_describe(label, effect, rules, f'{which} requests')} ({effect['pairs']} rated pairs)"


def _pct(x: float) -> str:
    """-0.031 -> "−3.1 %" (a true minus sign); zero -> "0.0 %"."""
    return "0.0 %" if x == 0 else f"{x * 100:+.1f} %".replace("-", "\u2212")


def _describe(name: str, effect: dict, rules: GateRules, what: str) -> str:
    return (f"{name} {_pct(effect['effect'])} [{_pct(effect['low'])}, {_pct(effect['high'])}] "
            f"{rules.confidence * 100:.0f} % paired bootstrap over {effect['n']} {what}")


def _sources(paired: dict) -> str:
    sources = paired.get("sources") or []
    generated, covers = sources.count("generated"), sources.count("cover")
    return f"({generated} generated, {covers} covers)"


def decide(eval_result: dict, rules: GateRules | None = None) -> dict:
    rules = rules or GateRules()
    champ, chall = eval_result["metrics"]["champion"], eval_result["metrics"]["challenger"]
    paired = eval_result.get("paired") or {}
    failed, passed, evidence = [], [], {}
    measured = []  # (better, resolvably worse, reason) per held-out measure: val loss, preference margin
    missing = []  # why a measure could not be taken: decisive only when no measure was taken

    def check(ok: bool, good: str, bad: str) -> None:
        (passed if ok else failed).append(good if ok else bad)

    val = paired.get("val")
    if val is None:
        missing.append("no paired per-image losses on held-out images: the evaluation cannot show the challenger "
                       "is better (see the evaluation notes)")
    elif not val.get("champion"):
        missing.append("no held-out validation images: the challenger cannot be shown to generalise, champion kept")
    elif len(val["champion"]) < rules.min_val_images:
        missing.append(f"only {len(val['champion'])} held-out image(s) {_sources(val)}, fewer than "
                       f"min_val_images={rules.min_val_images}: too few to resolve a difference, champion kept")
        if len(val["champion"]) >= 2:  # what was measured, shown but not used
            effect = evidence["val"] = paired_effect(val["champion"], val["challenger"], rules)
            if effect["finite"]:
                passed.append(f"{_describe('val loss', effect, rules, 'held-out images')} {_sources(val)}: "
                              "for information only (too few images)")
    else:
        effect = evidence["val"] = paired_effect(val["champion"], val["challenger"], rules)
        text = f"{_describe('val loss', effect, rules, 'held-out images')} {_sources(val)}"
        if not effect["finite"]:
            failed.append(f"val loss is not finite for one of the models ({effect['n']} held-out images)")
        else:
            bar = -rules.min_val_improvement
            better, worse = effect["high"] < bar, effect["low"] > 0
            verdict = "better" if better else "resolvably worse" if worse else "not resolvably better"
            measured.append((better, worse, f"{text}: {verdict} (upper end {'below' if better else 'needs to be below'} "
                                            f"{_pct(bar)})"))

    effect, text = _margin(paired.get("pairs"), rules, "preference margin", "held-out")
    if effect is None:
        if text:
            passed.append(f"preference rule skipped: {text}")
    else:
        evidence["preference"] = effect
        if not effect["finite"]:
            failed.append(f"preference margin is not finite for one of the models ({effect['pairs']} pairs)")
        else:
            better, worse = effect["high"] < 0, effect["low"] > 0
            verdict = ("better: it moved towards the covers users preferred" if better
                       else "resolvably worse: it moved towards the covers users liked less" if worse
                       else "not resolvably better")
            measured.append((better, worse, f"{text}: {verdict}"))
    if measured:  # better on either measure and resolvably worse on none
        ok = any(m[0] for m in measured) and not any(m[1] for m in measured)
        (passed if ok else failed).extend(m[2] for m in measured)
        passed.extend(m.replace(", champion kept", "") + " (not decisive: the other measure decides)" for m in missing)
    else:
        failed.extend(missing)

    # The reference: earlier promoted weeks' held-out images and pairs. Its preference margin
    # goes first: a resolvably better one waives an unresolved image loss (Diffusion-DPO moves the
    # gap between the covers, not the liked covers' loss); a resolvably worse one always keeps.
    margin, margin_text = _margin(paired.get("reference_pairs"), rules, "reference preference margin", "earlier")
    margin_better = bool(margin and margin["finite"] and margin["high"] < 0)
    if margin is None:
        if margin_text:
            passed.append(f"reference preference rule skipped: {margin_text}")
    else:
        evidence["reference_preference"] = margin
        if not margin["finite"]:
            failed.append(f"reference preference margin is not finite for one of the models ({margin['pairs']} pairs)")
        else:
            check(margin["low"] <= 0, f"{margin_text}: {'better' if margin_better else 'not resolvably worse'}",
                  f"{margin_text}: resolvably worse, it moved towards the covers earlier weeks' users liked less: "
                  "this week's data is suspect")

    reference = paired.get("reference")
    n_ref = len((reference or {}).get("champion") or [])
    if not n_ref:
        passed.append("reference rule skipped: no held-out images of an earlier promoted week yet")
    elif n_ref < rules.min_reference_images:
        passed.append(f"reference rule skipped: only {n_ref} reference image(s), fewer than "
                      f"min_reference_images={rules.min_reference_images}")
    else:
        effect = evidence["reference"] = paired_effect(reference["champion"], reference["challenger"], rules)
        weeks = len(set(reference.get("weeks") or []))
        text = f"{_describe('reference loss', effect, rules, 'reference images')} from {weeks} earlier week(s)"
        if not effect["finite"]:
            failed.append(f"reference loss is not finite for one of the models ({n_ref} images)")
        else:
            tolerance = rules.max_reference_degradation
            unsure = f"{text}: may be worse on earlier weeks' held-out images (upper end above {_pct(tolerance)})"
            if effect["high"] <= tolerance:
                passed.append(f"{text}: not worse (upper end within {_pct(tolerance)})")
            elif margin_better and effect["low"] <= tolerance:
                passed.append(f"{unsure} (not decisive: the reference preference margin is better)")
            else:
                failed.append(f"{unsure}: this week's data is suspect")

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
    # A kept challenger's reasons: what failed, then the measured effects that passed.
    context = [p for p in passed if p.startswith(("val loss", "reference", "preference"))]
    return {"decision": decision, "reasons": failed + context if failed else passed,
            "evidence": evidence, "rules": asdict(rules)}
