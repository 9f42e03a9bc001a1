import json


def test_tiny_sdxl_loads_through_from_pretrained_and_generates(tiny_model):
    import torch
    from diffusers import StableDiffusionXLPipeline

    index = json.loads((tiny_model / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model)
    ids = pipe.tokenizer("album cover of a night city").input_ids
    assert len(set(ids)) > 3  # real tokens, not one unknown id
    out = pipe("album cover of a night city", num_inference_steps=2, height=64, width=64,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    again = pipe("album cover of a night city", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 64, 64, 3) and (out == again).all()
