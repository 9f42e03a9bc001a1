"""Diffusion-DPO (Wallace et al. 2023) for the one LoRA trainer: the loss, the pairs' data and
the frozen reference.

For a pair (preferred w, dispreferred l) of one prompt, both latents get the same noise and
timestep; with e = the noise-prediction error (MSE) of the model being trained and r = that of
the frozen reference,

    loss = -log sigmoid( -beta/2 * ((e_w - e_l) - (r_w - r_l)) )

so the loss falls when the trained model improves more on the preferred image than on the
dispreferred one, relative to the reference (it is log 2 where the two agree). The reference is
the production model (base with the production LoRA fused), so each week moves from what users
see now; without one it is the base.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.dataset import Example


@dataclass(frozen=True)
class PreferencePair:
    preferred: Example
    dispreferred: Example
    caption: str


def pairs_from_manifest(manifest: dict, split: str = "train") -> list[PreferencePair]:
    """The snapshot's preference pairs of one split (older manifests have none)."""
    out = []
    for pair in manifest.get("pairs") or []:
        if pair.get("split", "train") != split:
            continue
        caption = pair.get("caption", "")
        won, lost = (Example(uri=pair[side]["uri"], caption=caption, sha256=pair[side].get("sha256", ""))
                     for side in ("preferred", "dispreferred"))
        out.append(PreferencePair(won, lost, caption))
    return out


def dpo_loss(model_w, model_l, ref_w, ref_l, beta: float):
    """(mean loss, share of pairs the model already ranks right relative to the reference)."""
    import torch.nn.functional as F

    inside = -0.5 * beta * ((model_w - model_l) - (ref_w - ref_l))
    return -F.logsigmoid(inside).mean(), (inside > 0).float().mean()


class PairData:
    """The pairs' images through the trainer's content-keyed caches (each image once); a pair
    with an unreadable image is dropped."""

    def __init__(self, prepared_cls, parts, pairs: list[PreferencePair], resolution: int, cache_dir, cache_text):
        unique: dict[str, Example] = {}
        for pair in pairs:
            for example in (pair.preferred, pair.dispreferred):
                unique.setdefault(example.sha256 or example.uri, example)
        self.images = prepared_cls(parts, list(unique.values()), resolution, cache_dir, cache_text)
        index = {(e.sha256 or e.uri): n for n, e in enumerate(self.images.examples)}
        self.pairs = [(index[won], index[lost], pair.caption) for pair in pairs
                      if (won := pair.preferred.sha256 or pair.preferred.uri) in index
                      and (lost := pair.dispreferred.sha256 or pair.dispreferred.uri) in index]
        self.dropped = len(pairs) - len(self.pairs)


def load_reference(parts, location: str | None):
    """A frozen copy of the base UNet with the adapter at ``location`` fused in (None: the base)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(parts.base_model, subfolder="unet")
    if location:
        from peft import LoraConfig
        from peft.tuners.tuners_utils import BaseTunerLayer

        from training.trainer import adapter_config, load_adapter_into_unet

        rank, alpha, targets = adapter_config(location)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets))
        load_adapter_into_unet(unet, location)
        for module in unet.modules():
            if isinstance(module, BaseTunerLayer):
                module.merge()
    unet.requires_grad_(False)
    unet.eval()
    return unet.to(parts.device, dtype=parts.weight_dtype)


def dpo_batch_loss(parts, reference, config, data: PairData, indices: list[int], generator, cache_text: bool):
    """The DPO loss of one batch of pairs; all randomness comes from ``generator``."""
    import torch

    from training.trainer import encode_prompts, per_sample_loss

    chosen = [data.pairs[i] for i in indices]
    items = data.images.items
    order = [won for won, _, _ in chosen] + [lost for _, lost, _ in chosen]  # preferred half, then dispreferred
    latents = torch.stack([items[i]["latent"] for i in order])
    time_ids = torch.stack([items[i]["time_ids"] for i in order])
    captions = [c for _, _, c in chosen] * 2
    if cache_text:
        texts = [data.images.text(c) for c in captions]
        cond = {k: torch.stack([t[k] for t in texts]).to(parts.device) for k in texts[0]}
    else:
        cond = encode_prompts(parts, captions)
    half = (len(chosen), *latents.shape[1:])
    noise = torch.randn(half, generator=generator).repeat(2, 1, 1, 1)  # the pair shares noise and timestep
    timesteps = torch.randint(0, parts.scheduler.config.num_train_timesteps, (len(chosen),),
                              generator=generator).repeat(2)
    latents, noise, timesteps = (t.to(parts.device) for t in (latents.float(), noise, timesteps))
    model = per_sample_loss(parts, latents, cond, time_ids, timesteps, noise, None)
    with torch.no_grad():
        ref = per_sample_loss(parts, latents, cond, time_ids, timesteps, noise, None, unet=reference)
    model_w, model_l = model.chunk(2)
    ref_w, ref_l = ref.chunk(2)
    loss, _ = dpo_loss(model_w, model_l, ref_w, ref_l, config.beta)
    return loss
