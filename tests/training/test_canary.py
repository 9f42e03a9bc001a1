"""The canary: deterministic assignment, the users' verdict both ways, too few samples, the registry."""

from datetime import timedelta

import pytest

from tests.training.conftest import WEEK_END, WEEK_START


def test_assignment_is_a_pure_function_of_the_request_id():
    from sleeve.registry import serves_canary

    ids = [f"req-{n}" for n in range(4000)]
    first = [serves_canary(i, 0.2) for i in ids]
    assert first == [serves_canary(i, 0.2) for i in ids]
    assert 0.18 < sum(first) / len(ids) < 0.22
    assert not any(serves_canary(i, 0.0) for i in ids) and all(serves_canary(i, 1.0) for i in ids)
    # a larger share keeps every request a smaller one had
    assert all(serves_canary(i, 0.3) for i, yes in zip(ids, first, strict=True) if yes)


def _register(warehouse, version):
    from sleeve.registry import register

    return register(warehouse, version=version, kind="style", base_model="tiny", adapter_uri=f"file:///m/{version}",
                    manifest_uri="file:///s.json", metrics={}, training_run_id="run", alias=None)


def test_batch_generate_serves_the_canary_its_share_of_new_requests(warehouse, store):
    from inference.shards import plan_shards
    from sleeve import registry

    _register(warehouse, "prod")
    registry.promote(warehouse, "prod")
    _register(warehouse, "cand")
    registry.start_canary(warehouse, "cand")
    rows = [{"request_id": f"r{n}", "positive": "a cover", "num_images": 1, "prompt_found": True, "kind": "user"}
            for n in range(60)]
    rows += [{"request_id": "bf", "positive": "a cover", "num_images": 1, "prompt_found": True, "kind": "backfill",
              "model_version": "prod"}]

    def served():
        planned = plan_shards(warehouse, store, rows, base_model="tiny", defaults={}, canary_share=0.5)
        out = {}
        for shard in planned["shards"]:
            from sleeve.store import open_uri, read_json

            for req in read_json(*open_uri(shard["manifest_uri"]))["requests"]:
                out[req["request_id"]] = shard["model_version"]
        return out

    first = served()
    assert first == served()  # the same requests land on the same side every time
    expected = {r["request_id"]: "cand" if registry.serves_canary(r["request_id"], 0.5) else "prod"
                for r in rows if r["kind"] == "user"}
    assert {k: v for k, v in first.items() if k != "bf"} == expected and first["bf"] == "prod"
    assert 15 < list(expected.values()).count("cand") < 45
    none = plan_shards(warehouse, store, rows, base_model="tiny", defaults={}, canary_share=0.0)
    assert {s["model_version"] for s in none["shards"]} == {"prod"}


def test_judge_promotes_a_better_canary_and_retires_an_equal_or_worse_one():
    from training.canary import CanaryRules, judge

    production = [3.0, 3.25, 3.5, 2.75] * 8
    better = judge([x + 0.75 for x in production], production)
    assert better["decision"] == "promote" and "better (lower end above +0.00), promoted" in better["reason"]
    assert better["evidence"]["low"] > 0 and "95% Welch interval" in better["reason"]
    same = judge(list(production), production)
    assert same["decision"] == "retire" and "not resolvably better" in same["reason"]
    worse = judge([x - 0.5 for x in production], production)
    assert worse["decision"] == "retire" and worse["evidence"]["high"] < 0
    # a small lift that the interval cannot tell from noise is not enough
    noisy = judge([x + 0.05 for x in production], production)
    assert noisy["decision"] == "retire" and noisy["evidence"]["low"] < 0 < noisy["evidence"]["diff"]
    # a required lift higher than the effect retires even a resolvably better canary
    assert judge([x + 0.75 for x in production], production, CanaryRules(min_lift=1.0))["decision"] == "retire"


def test_too_few_rated_requests_retire_the_canary_and_say_so():
    from training.canary import CanaryRules, judge

    verdict = judge([5.0] * 5, [1.0] * 40, CanaryRules(min_requests=20))
    assert verdict["decision"] == "retire"
    assert verdict["reason"].startswith("only 5 canary and 40 production request(s) rated, fewer than "
                                        "canary_min_requests=20")
    assert judge([5.0, 4.0] * 10, [1.0, 2.0] * 10, CanaryRules(min_requests=20))["decision"] == "promote"
    with pytest.raises(ValueError, match="canary_min_requests"):
        CanaryRules(min_requests=1)


def _serve(warehouse, version, ratings, prefix, when, reviewed=None):
    """One request per rating: two images each, both rated by the request's user."""
    reviewed = reviewed or when + timedelta(hours=1)
    rows, reviews, requests = [], [], []
    for n, rating in enumerate(ratings):
        rid = f"{prefix}{n}"
        requests.append({"request_id": rid, "kind": "user", "user_id": "u1", "created_at": when})
        for k in range(2):
            rows.append({"image_id": f"{rid}-{k}", "request_id": rid, "image_index": k, "model_version": version,
                         "created_at": when})
            reviews.append({"review_id": f"rv-{rid}-{k}", "image_id": f"{rid}-{k}", "user_id": "u1",
                            "rating": rating, "created_at": reviewed})
    warehouse.upsert("generation_requests", requests)
    warehouse.upsert("images", rows)
    warehouse.upsert("reviews", reviews)


@pytest.mark.parametrize("lift,alias,decision", [(1, "production", "promote"), (0, "retired", "retire")])
def test_settle_moves_the_registry_and_a_rerun_changes_nothing(warehouse, lift, alias, decision):
    from sleeve import registry
    from training.canary import CanaryRules, settle_canary

    _register(warehouse, "prod")
    registry.promote(warehouse, "prod", WEEK_START - timedelta(days=7))
    _register(warehouse, "cand")
    registry.start_canary(warehouse, "cand", WEEK_START)
    day = WEEK_START + timedelta(days=2)
    _serve(warehouse, "prod", [2, 3, 4, 3] * 6, "p", day)
    _serve(warehouse, "cand", [min(5, r + lift) for r in [2, 3, 4, 3]] * 3, "c", day)
    # made before the canary started (reviewed during its week): not part of the comparison
    _serve(warehouse, "prod", [5] * 30, "old", WEEK_START - timedelta(days=3), reviewed=day)
    rules = CanaryRules(min_requests=10)
    verdict = settle_canary(warehouse, WEEK_START, WEEK_END, rules, now=WEEK_END)
    assert verdict["decision"] == decision, verdict["reason"]
    assert verdict["evidence"]["production_requests"] == 24 and verdict["evidence"]["canary_requests"] == 12
    row = registry.get_version(warehouse, "cand")
    assert row["alias"] == alias and row["decision_reason"] == verdict["reason"]
    assert registry.production_version(warehouse)["version"] == ("cand" if decision == "promote" else "prod")
    assert registry.canary_version(warehouse) is None
    again = settle_canary(warehouse, WEEK_START, WEEK_END, rules, now=WEEK_END)
    assert (again["decision"], again["reason"]) == (verdict["decision"], verdict["reason"])
    assert len(warehouse.query("SELECT * FROM canary_decisions")) == 1
    # the weekly report shows both arms with the interval and the decision
    from sleeve.report import build_report
    from sleeve.report_render import to_markdown

    text = to_markdown(build_report(warehouse, WEEK_START, WEEK_END))
    e = verdict["evidence"]
    assert (f"canary cand vs prod: canary {e['canary_mean']:.2f} ★ (12 requests) vs production "
            f"{e['production_mean']:.2f} ★ (24 requests), {e['diff']:+.2f} [{e['low']:+.2f}, {e['high']:+.2f}] "
            f"95% interval → {decision}") in text


def test_a_new_canary_retires_the_one_still_running(warehouse):
    from sleeve import registry

    for v in ("prod", "c1", "c2"):
        _register(warehouse, v)
    registry.promote(warehouse, "prod")
    registry.start_canary(warehouse, "c1")
    registry.start_canary(warehouse, "c2")
    assert registry.canary_version(warehouse)["version"] == "c2"
    old = registry.get_version(warehouse, "c1")
    assert old["alias"] == "retired" and old["decision_reason"] == "superseded by canary c2"
    assert registry.get_version(warehouse, "c2")["canary_of"] == "prod"


def test_the_report_names_the_canary_serving_at_the_weeks_end_also_after_its_verdict(warehouse):
    """A re-made report for a week says the same: which canary served is read by dates, not from
    the alias that the next week's verdict moves."""
    from sleeve import registry
    from sleeve.report import build_report
    from sleeve.report_render import to_markdown

    _register(warehouse, "prod")
    registry.promote(warehouse, "prod", WEEK_START - timedelta(days=7))
    _register(warehouse, "cand")
    registry.start_canary(warehouse, "cand", WEEK_END)  # this week's retraining, at the week's end
    _serve(warehouse, "prod", [3, 4], "p", WEEK_START + timedelta(days=2))  # a week with activity
    _serve(warehouse, "prod", [3, 4], "q", WEEK_START - timedelta(days=5))
    before = to_markdown(build_report(warehouse, WEEK_START, WEEK_END))
    assert "canary serving: cand (against prod, since " + WEEK_END.isoformat()[:10] + ")" in before
    registry.retire(warehouse, "cand", "not better", WEEK_END + timedelta(days=7))  # next week's verdict
    assert to_markdown(build_report(warehouse, WEEK_START, WEEK_END)) == before
    # the week before the canary started shows none
    earlier = to_markdown(build_report(warehouse, WEEK_START - timedelta(days=7), WEEK_START))
    assert "canary serving" not in earlier


def test_a_retired_canarys_week_gives_no_reference_images(warehouse):
    """The users said no to that week's model, so its data may be the bad data: later gates do not
    take its held-out images as evidence. A week whose canary was promoted still counts."""
    from sleeve import registry
    from training.snapshot import earlier_snapshots
    from training.weekly import record_run

    _register(warehouse, "prod")
    registry.promote(warehouse, "prod", WEEK_START - timedelta(days=7))
    for n, version in enumerate(("good", "bad")):
        start = WEEK_START + timedelta(days=7 * n)
        _register(warehouse, version)
        record_run(warehouse, f"run-{version}", start, start + timedelta(days=7), status="trained", kind="style",
                   decision="promote", model_version=version, manifest_uri=f"file:///snap/{version}.json")
    registry.start_canary(warehouse, "good", WEEK_END)
    registry.promote(warehouse, "good", WEEK_END + timedelta(days=7), reason="users liked it")
    registry.start_canary(warehouse, "bad", WEEK_END + timedelta(days=7))
    later = WEEK_START + timedelta(days=28)
    assert [r["manifest_uri"] for r in earlier_snapshots(warehouse, later, 4)] == \
        ["file:///snap/bad.json", "file:///snap/good.json"]  # undecided: still the gate's word
    registry.retire(warehouse, "bad", "users rated it lower", WEEK_END + timedelta(days=14))
    assert [r["manifest_uri"] for r in earlier_snapshots(warehouse, later, 4)] == ["file:///snap/good.json"]


def test_the_canary_is_the_default_unless_turned_off_or_given_no_share():
    from training.weekly import uses_canary

    assert uses_canary({}, 0.2) and uses_canary({"canary": True}, 0.2) and uses_canary(None, 0.01)
    assert not uses_canary({"canary": False}, 0.2)
    assert not uses_canary({"canary": True}, 0.0)  # a canary no request reaches could only be retired
