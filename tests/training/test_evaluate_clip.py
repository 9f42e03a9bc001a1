"""The evaluation's CLIP score: a tiny random CLIP saved with save_pretrained stands in for
openai/clip-vit-base-patch32 and is loaded through the same from_pretrained(path_or_id)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from tests.training.conftest import WEEK_END, WEEK_START, png

PROMPTS = ["album cover art of a lonely city at night, neon rain", "album cover art of the sea at sunset",
           "a red car on an empty road", "flowers and stars"]


def build_tiny_clip(output_dir: Path) -> Path:
    """A randomly initialised CLIPModel + CLIPProcessor (local tokenizer, PIL image processor)."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from sleeve.tinymodel import write_tokenizer_files

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(vocab=f"{tmp}/vocab.json", merges=f"{tmp}/merges.txt", model_max_length=77)
    text = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                  image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(output_dir)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(output_dir)
    return output_dir


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def _images(seeds):
    import io

    from PIL import Image

    return [Image.open(io.BytesIO(png(s, (64, 64)))) for s in seeds]


def test_clip_score_matches_clip_forward_is_deterministic_and_bounded(tiny_clip):
    import torch

    from training.evaluate import clip_scores, load_clip

    images = _images(range(4))
    clip = load_clip(str(tiny_clip))
    scores = clip_scores(images, PROMPTS, clip)
    assert len(scores) == len(PROMPTS) and all(0 <= s <= 100 for s in scores)
    assert clip_scores(images, PROMPTS, load_clip(str(tiny_clip))) == scores  # a fresh load: same numbers
    assert clip_scores(_images(range(10, 14)), PROMPTS, clip) != scores  # it looks at the images

    # the same numbers by another route: CLIPModel.forward's image-text logits are scale * cosine
    model, processor = clip
    inputs = processor(text=PROMPTS, images=images, return_tensors="pt", padding=True)
    with torch.inference_mode():
        cosine = model(**inputs).logits_per_image.diagonal() / model.logit_scale.exp()
    assert scores == pytest.approx((100 * cosine).clamp(min=0).tolist(), abs=1e-3)


def test_unloadable_clip_model_is_named(tmp_path):
    from training.evaluate import load_clip

    (tmp_path / "not-clip").mkdir()
    with pytest.raises(ValueError, match="clip_model .*not-clip.* is not a loadable CLIP model"):
        load_clip(str(tmp_path / "not-clip"))


def test_evaluate_records_clip_score_for_champion_and_challenger(warehouse, store, world, tiny_model, tiny_clip,
                                                                 tmp_path):
    from sleeve.store import open_uri, read_json
    from training import evaluate, evaluate_job, train_job
    from training.gate import GateRules, decide
    from training.snapshot import build_snapshot
    from training.weekly import conclude, run_id_for

    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    manifest = read_json(*open_uri(snap["uri"]))
    trained = train_job.main(manifest, {"train": {"base_model": str(tiny_model), "steps": 1, "rank": 2},
                                        "work_dir": str(tmp_path / "work")}, store.uri("models/style/clip-test"))
    config = {"base_model": str(tiny_model), "challenger_uri": trained["adapter_uri"], "champion_uri": None,
              "steps": 1, "max_eval_images": 1, "clip_model": str(tiny_clip)}
    result = evaluate_job.main(manifest, config, store.uri("evals/clip-test"))

    prompts = [i["prompt"] for i in evaluate.EVAL_SET["items"]]
    for name in ("champion", "challenger"):
        per_prompt = result["clip_scores"][name]
        assert len(per_prompt) == len(prompts) and all(0 <= s <= 100 for s in per_prompt)
        assert result["metrics"][name]["clip_score"] == pytest.approx(sum(per_prompt) / len(per_prompt))
    assert result["clip_model"] == str(tiny_clip) and not any("clip_score skipped" in n for n in result["notes"])
    assert read_json(store, "evals/clip-test/metrics.json")["metrics"] == json.loads(json.dumps(result["metrics"]))

    # the gate's CLIP rule sees it, and the run record keeps it
    outcome = conclude(warehouse, run_id=run_id_for(WEEK_START), start=WEEK_START, end=WEEK_END, version="clip-v1",
                       base_model=str(tiny_model), manifest_uri=snap["uri"], train_result=trained,
                       eval_result=result, now=WEEK_END)
    run = warehouse.query("SELECT * FROM training_runs")[0]
    recorded = json.loads(run["metrics"])
    assert {recorded[n]["clip_score"] for n in ("champion", "challenger")} == \
        {result["metrics"][n]["clip_score"] for n in ("champion", "challenger")}
    assert outcome["decision"] == "keep"  # one held-out image: too few for the gate to resolve anything
    assert outcome["reasons"][0].startswith("only 1 held-out image(s)")
    strict = decide(result, GateRules(min_clip_score_delta=101))  # no delta of two scores in [0, 100] passes
    assert strict["decision"] == "keep" and any(r.startswith("clip_score dropped") for r in strict["reasons"])

    without = evaluate_job.main(manifest, {**config, "clip_model": ""}, store.uri("evals/clip-test-off"))
    assert "clip_score skipped: no clip_model configured" in without["notes"]
    assert not any("clip_score" in m for m in without["metrics"].values()) and without["clip_scores"] == {}



def test_an_evaluation_without_held_out_images_is_plain_json_and_the_gate_keeps(warehouse, store, world, tiny_model,
                                                                                 tmp_path):
    """A DPO week can train on pairs while no liked image is held out: the evaluation must still
    be a result the task can return (strict JSON: XCom refuses NaN) and the gate keeps the champion."""
    from sleeve.store import open_uri, read_json
    from training import evaluate_job, train_job
    from training.gate import GateRules, decide
    from training.snapshot import build_snapshot

    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    manifest = read_json(*open_uri(snap["uri"]))
    manifest["items"] = [{**item, "split": "train"} for item in manifest["items"]]  # nothing held out
    trained = train_job.main(manifest, {"train": {"base_model": str(tiny_model), "steps": 1, "rank": 2},
                                        "work_dir": str(tmp_path / "work")}, store.uri("models/style/no-val"))
    result = evaluate_job.main(manifest, {"base_model": str(tiny_model), "challenger_uri": trained["adapter_uri"],
                                          "champion_uri": None, "steps": 1}, store.uri("evals/no-val"))
    json.dumps(result, allow_nan=False)  # raises on NaN, as the task's XCom push did
    assert result["metrics"]["challenger"]["val_loss"] is None
    verdict = decide(result, GateRules())
    assert verdict["decision"] == "keep" and verdict["reasons"][0].startswith("no held-out validation images")
