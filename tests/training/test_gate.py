"""The promotion gate on synthetic per-image losses: a challenger is promoted only when the paired
evidence resolves that it is better, on enough held-out images, and not worse on the reference."""

import numpy as np
import pytest

from training.gate import GateRules, decide

STATS = {"blank_images": 0, "stat_distance": 0.5}


def result(champion, challenger, *, reference=None, sources=None, **challenger_metrics):
    champion, challenger = [float(x) for x in champion], [float(x) for x in challenger]
    paired = {"val": {"champion": champion, "challenger": challenger,
                      "sources": sources or ["generated"] * len(champion)}}
    if reference is not None:
        ref_champ, ref_chall = reference
        paired["reference"] = {"champion": [float(x) for x in ref_champ], "challenger": [float(x) for x in ref_chall],
                               "weeks": ["2026-01-05"] * (len(ref_champ) // 2) + ["2025-12-29"] * (len(ref_champ)
                                                                                                   - len(ref_champ) // 2)}
    return {"val_split": "val", "val_images": len(champion), "paired": paired,
            "metrics": {"champion": {**STATS, "val_loss": float(np.mean(champion))},
                        "challenger": {**STATS, "val_loss": float(np.mean(challenger)), **challenger_metrics}}}


def losses(n, seed=0):
    return np.random.default_rng(seed).uniform(0.8, 1.2, n)


def test_a_clear_win_is_promoted_and_the_reason_states_the_effect_and_its_interval():
    champ = losses(24)
    chall = champ * (1 - 0.03 + np.random.default_rng(1).normal(0, 0.01, 24))  # 3 % better, little spread
    verdict = decide(result(champ, chall, sources=["generated"] * 18 + ["cover"] * 6))
    assert verdict["decision"] == "promote"
    val = verdict["evidence"]["val"]
    assert val["n"] == 24 and val["low"] < val["effect"] < val["high"] < 0
    assert val["effect"] == pytest.approx((chall - champ).sum() / champ.sum())
    text = verdict["reasons"][0]
    assert text.startswith(f"val loss \u2212{abs(val['effect']) * 100:.1f} % [\u2212{abs(val['low']) * 100:.1f} %, "
                           f"\u2212{abs(val['high']) * 100:.1f} %] 95 % paired bootstrap over 24 held-out images "
                           "(18 generated, 6 covers)")
    assert "reference rule skipped: no held-out images of an earlier promoted week yet" in verdict["reasons"]
    assert decide(result(champ, chall)) == decide(result(champ, chall))  # seeded: same losses, same interval


def test_a_challenger_identical_to_the_champion_is_kept():
    champ = losses(40)
    verdict = decide(result(champ, champ))
    assert verdict["decision"] == "keep"
    assert verdict["reasons"][0].startswith("val loss 0.0 % [0.0 %, 0.0 %] 95 % paired bootstrap over 40")
    assert "not resolvably better" in verdict["reasons"][0]


def test_noise_is_kept_even_when_its_mean_happens_to_be_lower():
    champ = losses(30)
    rng = np.random.default_rng(7)
    chall = champ + rng.normal(0, 0.05, 30)
    chall -= (chall - champ).mean() + 0.002  # mean 0.2 % lower, spread 5 %: the bootstrap cannot resolve it
    verdict = decide(result(champ, chall))
    effect = verdict["evidence"]["val"]
    assert effect["effect"] < 0 < effect["high"]
    assert verdict["decision"] == "keep" and "not resolvably better" in verdict["reasons"][0]
    # ... and a practical margin keeps a resolvable but small gain
    small = champ * 0.997
    assert decide(result(champ, small))["decision"] == "promote"
    assert decide(result(champ, small), GateRules(min_val_improvement=0.01))["decision"] == "keep"


def test_too_few_held_out_images_keep_the_champion_and_say_so():
    champ = losses(3)
    assert GateRules().min_val_images == 4
    verdict = decide(result(champ, champ * 0.5, sources=["generated"] * 2 + ["cover"]))
    assert verdict["decision"] == "keep"
    assert verdict["reasons"][0] == ("only 3 held-out image(s) (2 generated, 1 covers), fewer than min_val_images=4: "
                                     "too few to resolve a difference, champion kept")
    # what was measured is shown, and marked as not used
    assert verdict["reasons"][1].startswith("val loss \u221250.0 % [\u221250.0 %, \u221250.0 %] 95 % paired bootstrap "
                                            "over 3 held-out images (2 generated, 1 covers): for information only")
    assert verdict["evidence"]["val"]["n"] == 3
    assert decide(result(champ, champ * 0.5), GateRules(min_val_images=3))["decision"] == "promote"
    assert len(decide(result(champ[:1], champ[:1] * 0.5))["reasons"]) == 2  # one image: no interval, only the rule
    no_pairs = {**result(champ, champ), "paired": {}}  # an evaluation without per-image losses
    assert decide(no_pairs)["decision"] == "keep"
    assert decide(no_pairs)["reasons"][0].startswith("no paired per-image losses on held-out images")


def test_worse_on_the_reference_keeps_the_champion_although_this_week_looks_better():
    champ, ref = losses(24), losses(32, seed=3)
    better = champ * 0.95  # this week's held-out images: 5 % better
    worse_ref = ref * (1.02 + np.random.default_rng(4).normal(0, 0.005, 32))  # earlier weeks: 2 % worse
    verdict = decide(result(champ, better, reference=(ref, worse_ref)))
    assert verdict["decision"] == "keep"
    first = verdict["reasons"][0]
    ref_effect = verdict["evidence"]["reference"]
    assert first.startswith(f"reference loss +{ref_effect['effect'] * 100:.1f} % [+")
    assert "over 32 reference images from 2 earlier week(s)" in first and 0.015 < ref_effect["effect"] < 0.025
    assert "may be worse on earlier weeks' held-out images" in first
    assert any(r.startswith("val loss \u22125.0 %") for r in verdict["reasons"])  # the week's effect is still shown
    assert 0 < ref_effect["low"] < ref_effect["high"]
    # within a tolerance the same evidence passes; a reference that also improves passes
    assert decide(result(champ, better, reference=(ref, worse_ref)),
                  GateRules(max_reference_degradation=0.05))["decision"] == "promote"
    assert decide(result(champ, better, reference=(ref, ref * 0.98)))["decision"] == "promote"
    # a reference too small to judge is skipped, and the reason says so
    small = decide(result(champ, better, reference=(ref[:3], worse_ref[:3])))
    assert small["decision"] == "promote"
    assert "reference rule skipped: only 3 reference image(s), fewer than min_reference_images=4" in small["reasons"]


def test_the_other_rules_still_keep():
    champ = losses(24)
    better = champ * 0.9
    assert decide(result(champ, better, blank_images=2))["decision"] == "keep"
    # colour collapse (a render far from the liked images' colour statistics) is refused;
    # a move within the guard is left to the loss evidence
    assert decide(result(champ, better, stat_distance=1.8))["decision"] == "keep"
    assert decide(result(champ, better, stat_distance=0.9))["decision"] == "promote"
    clip = result(champ, better)
    clip["metrics"]["champion"]["clip_score"], clip["metrics"]["challenger"]["clip_score"] = 30.0, 20.0
    assert any(r.startswith("clip_score dropped") for r in decide(clip)["reasons"])
    nan = result(champ, better)
    nan["paired"]["val"]["challenger"][3] = float("nan")
    assert decide(nan)["decision"] == "keep" and "not finite" in decide(nan)["reasons"][0]


def test_paired_effect_and_rules_validate():
    from training.gate import paired_effect

    effect = paired_effect([1.0, 1.0, 1.0, 1.0], [0.9, 0.9, 0.9, 0.9], GateRules())
    assert effect["effect"] == pytest.approx(-0.1) and effect["low"] == pytest.approx(-0.1)
    with pytest.raises(ValueError, match="one length"):
        paired_effect([1.0, 2.0], [1.0], GateRules())
    with pytest.raises(ValueError, match="confidence"):
        GateRules(confidence=1.0)
    with pytest.raises(ValueError, match="unknown gate rule"):
        GateRules.from_dict({"max_val_loss_increase": 0.02})
    params = {"min_val_images": 30, "steps": 12, "confidence": 0.9}
    assert GateRules.from_params(params) == GateRules(min_val_images=30, confidence=0.9)


def with_pairs(verdict_input, champ_w, champ_l, chall_w, chall_l, per_request=3):
    """Held-out preference pairs (preferred w, dispreferred l), ``per_request`` pairs a request."""
    n = len(champ_w)
    losses = {"champion": [float(x) for x in np.concatenate([champ_w, champ_l])],
              "challenger": [float(x) for x in np.concatenate([chall_w, chall_l])]}
    verdict_input["paired"]["pairs"] = {**losses, "pairs": [[i, n + i, f"req{i // per_request}"] for i in range(n)]}
    return verdict_input


def test_the_preference_margin_promotes_what_users_preferred_and_keeps_its_mirror():
    """Diffusion-DPO moves the margin, not the liked images' loss: a challenger that lowers the
    preferred covers' loss more than the dispreferred ones' is better although its val loss is
    flat; the same evidence mirrored (towards the covers users liked less) is kept."""
    champ = losses(24)
    flat = decide(result(champ, champ.copy()))
    assert flat["decision"] == "keep"  # the val loss alone shows nothing
    w, lose = losses(30, seed=3), losses(30, seed=4)
    noise = np.random.default_rng(5).normal(0, 0.002, 30)
    toward = with_pairs(result(champ, champ.copy()), w, lose, w * 0.97 + noise, lose * 1.0 - noise)
    verdict = decide(toward)
    assert verdict["decision"] == "promote", verdict["reasons"]
    pref = verdict["evidence"]["preference"]
    assert pref["n"] == 10 and pref["pairs"] == 30 and pref["low"] < pref["effect"] < pref["high"] < 0
    expected = ((w * 0.97 + noise - w) - (lose - noise - lose)).sum() / ((w + lose) / 2).sum()
    assert pref["effect"] == pytest.approx(expected)
    assert any(r.startswith("preference margin \u2212") and "over 10 held-out requests (30 rated pairs): better"
               in r for r in verdict["reasons"])
    away = decide(with_pairs(result(champ, champ * 0.95), w, lose, w * 1.03 + noise, lose - noise))
    assert away["decision"] == "keep"  # better on the liked images, but towards what users liked less
    assert any("resolvably worse: it moved towards the covers users liked less" in r for r in away["reasons"])
    same = decide(with_pairs(result(champ, champ.copy()), w, lose, w.copy(), lose.copy()))
    assert same["decision"] == "keep"
    # too few held-out requests: the margin is not used, and the reason says so
    few = decide(with_pairs(result(champ, champ.copy()), w[:9], lose[:9], w[:9] * 0.9, lose[:9], per_request=3))
    assert few["decision"] == "keep"
    assert "preference rule skipped: only 3 held-out request(s) with a rated pair, fewer than min_pair_requests=4" \
        in few["reasons"] + decide(with_pairs(result(champ, champ * 0.9), w[:9], lose[:9], w[:9], lose[:9]))["reasons"]


def test_the_preference_margin_decides_when_too_few_liked_images_are_held_out():
    champ = losses(2)
    w, lose = losses(30, seed=3), losses(30, seed=4)
    verdict = decide(with_pairs(result(champ, champ * 0.9), w, lose, w * 0.97, lose))
    assert verdict["decision"] == "promote", verdict["reasons"]
    assert any(r.startswith("only 2 held-out image(s)") and r.endswith("(not decisive: the other measure decides)")
               for r in verdict["reasons"])
    # a worse reference still keeps it: the margin is this week's evidence, not the reference's
    ref = losses(32, seed=7)
    kept = decide(with_pairs(result(champ, champ * 0.9, reference=(ref, ref * 1.05)), w, lose, w * 0.97, lose))
    assert kept["decision"] == "keep"


def with_reference_pairs(verdict_input, champ_w, champ_l, chall_w, chall_l, per_request=3):
    """Earlier weeks' held-out pairs, like :func:`with_pairs`."""
    with_pairs(verdict_input, champ_w, champ_l, chall_w, chall_l, per_request)
    verdict_input["paired"]["reference_pairs"] = verdict_input["paired"]["pairs"]
    del verdict_input["paired"]["pairs"]
    return verdict_input


def test_a_challenger_that_reversed_earlier_weeks_preferences_is_kept():
    """A week of inverted pairs: Diffusion-DPO on them lowers this week's (inverted) margin and
    the loss of the earlier weeks' liked images too, so the val and reference image rules pass;
    on the earlier weeks' pairs its margin turned positive, and that keeps it."""
    champ, ref = losses(24), losses(32, seed=7)
    w, lose = losses(30, seed=3), losses(30, seed=4)
    noise = np.random.default_rng(5).normal(0, 0.002, 30)
    fooled = result(champ, champ * 0.95, reference=(ref, ref * 0.97))
    assert decide(fooled)["decision"] == "promote"  # the image rules alone are fooled
    reversed_ = decide(with_reference_pairs(fooled, w, lose, w * 0.99 + noise, lose * 0.96 - noise))
    assert reversed_["decision"] == "keep", reversed_["reasons"]
    margin = reversed_["evidence"]["reference_preference"]
    assert 0 < margin["low"] < margin["effect"] and margin["n"] == 10 and margin["pairs"] == 30
    assert reversed_["reasons"][0].startswith("reference preference margin +") and "over 10 earlier requests" in reversed_["reasons"][0] and \
        "resolvably worse, it moved towards the covers earlier weeks' users liked less" in reversed_["reasons"][0]
    # an honest week: the earlier margin unchanged up to noise (both sides lowered alike): promoted
    honest = decide(with_reference_pairs(result(champ, champ * 0.95, reference=(ref, ref * 0.97)),
                                         w, lose, w * 0.97 + noise, lose * 0.97 - noise))
    assert honest["decision"] == "promote", honest["reasons"]
    assert any(r.startswith("reference preference margin") and r.endswith("not resolvably worse")
               for r in honest["reasons"])
    # Diffusion-DPO: the earlier liked covers' loss unresolved, the earlier weeks' margin better:
    # promoted; the same loss without the better margin, or resolvably worse, is kept
    unsure = (ref, ref * 1.005 + np.random.default_rng(8).normal(0, 0.01, 32))
    better = with_reference_pairs(result(champ, champ * 0.95, reference=unsure), w, lose, w * 0.99 - noise,
                                  lose * 1.0 + noise)
    verdict = decide(better)
    assert verdict["evidence"]["reference"]["low"] <= 0 < verdict["evidence"]["reference"]["high"]
    assert verdict["evidence"]["reference_preference"]["high"] < 0
    assert verdict["decision"] == "promote", verdict["reasons"]
    assert any(r.startswith("reference loss") and r.endswith("(not decisive: the reference preference margin is better)")
               for r in verdict["reasons"])
    flat = with_reference_pairs(result(champ, champ * 0.95, reference=unsure), w, lose, w.copy(), lose.copy())
    assert decide(flat)["decision"] == "keep"
    worse = with_reference_pairs(result(champ, champ * 0.95, reference=(ref, ref * 1.05)), w, lose,
                                 w * 0.99 - noise, lose * 1.0 + noise)
    assert decide(worse)["decision"] == "keep"
    few = decide(with_reference_pairs(result(champ, champ * 0.95), w[:9], lose[:9], w[:9], lose[:9] * 0.9))
    assert few["decision"] == "promote"  # 3 earlier requests: skipped, and said so
    assert "reference preference rule skipped: only 3 earlier request(s) with a rated pair, fewer than " \
        "min_pair_requests=4" in few["reasons"]


def test_the_evaluation_takes_each_held_out_pair_whole_and_each_image_once():
    from training.evaluate_job import _pair_images, _pair_index
    from training.snapshot import held_out_pairs

    def image(n):
        return {"ref": f"i{n}", "uri": f"file:///x/{n}.png", "sha256": f"{n:064x}"}

    pairs = [{"request_id": "r1", "split": "val", "caption": "blue", "preferred": image(1), "dispreferred": image(2)},
             {"request_id": "r1", "split": "val", "caption": "blue", "preferred": image(1), "dispreferred": image(3)},
             {"request_id": "r2", "split": "val", "caption": "red", "preferred": image(4), "dispreferred": image(5)},
             {"request_id": "r3", "split": "train", "caption": "x", "preferred": image(6), "dispreferred": image(7)}]
    held_out = held_out_pairs({"pairs": pairs})
    images = _pair_images(held_out, limit=10)
    assert [i["ref"] for i in images] == ["i1", "i2", "i3", "i4", "i5"]  # train pairs never, each image once
    assert images[3]["caption"] == "red"
    ids = [i["sha256"] for i in images]
    assert _pair_index(held_out, ids) == [[0, 1, "r1"], [0, 2, "r1"], [3, 4, "r2"]]
    # a limit never splits a pair: the evaluated images only ever hold whole pairs
    small = _pair_images(held_out, limit=4)
    assert [i["ref"] for i in small] == ["i1", "i2", "i3"]
    assert _pair_index(held_out, [i["sha256"] for i in small]) == [[0, 1, "r1"], [0, 2, "r1"]]
