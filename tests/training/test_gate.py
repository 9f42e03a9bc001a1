"""The weekly retrain's gate rules."""

from training.gate import GateRules, decide


def test_gate_rules():
    def result(champ_loss, chall_loss, blank=0, val_images=3):
        base = {"blank_images": 0, "stat_distance": 0.5}
        return {"val_split": "val", "val_images": val_images,
                "metrics": {"champion": {**base, "val_loss": champ_loss},
                            "challenger": {**base, "val_loss": chall_loss, "blank_images": blank}}}

    assert decide(result(1.0, 0.99))["decision"] == "promote"
    worse = decide(result(1.0, 1.05))
    assert worse["decision"] == "keep" and "val_loss" in worse["reasons"][0]
    assert decide(result(1.0, 1.05), GateRules(max_val_loss_increase=0.1))["decision"] == "promote"
    assert decide(result(1.0, 0.9, blank=2))["decision"] == "keep"
    assert decide(result(1.0, float("nan")))["decision"] == "keep"

    # no held-out images: the val loss would be on training data (or NaN), so never promote on it
    blind = decide(result(float("nan"), float("nan"), val_images=0))
    assert blind["decision"] == "keep" and blind["reasons"] == [
        "no held-out validation images (val_split='val', val_images=0): val_loss cannot show the challenger "
        "generalises"]
    unsplit = {k: v for k, v in result(1.0, 0.5).items() if k != "val_split"}  # an evaluation before the split
    assert decide(unsplit)["decision"] == "keep"
    lenient = decide(result(float("nan"), float("nan"), val_images=0), GateRules(require_held_out=False))
    assert lenient["decision"] == "promote" and lenient["reasons"][0].startswith("val_loss rule skipped")
    assert decide(result(1.0, 0.9, blank=1, val_images=0), GateRules(require_held_out=False))["decision"] == "keep"
