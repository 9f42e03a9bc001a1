"""Train Sleeve's base model: a small SDXL-architecture pipeline that has learnt to draw covers.

    python -m simulation.basemodel OUTPUT_DIR [--seed 0] [--threads 1] [--scale 1.0]

The demo, ``make simulate`` and the DAG tests that judge quality need a base model whose covers
follow their prompts, and one that can run and learn on a CPU. This script makes it from
nothing: procedurally drawn covers (:mod:`simulation.art`) paired with prompts in the production
format (``inference.prompts.build_prompt`` of labels drawn from the offline labeller's
vocabulary). It makes, in order:

1. a tokenizer: byte-level BPE (CLIP's format: ``vocab.json`` + ``merges.txt``) learnt on the
   prompt vocabulary, so every prompt word is one token and a prompt fits CLIP's 77;
2. both CLIP text encoders, seeded and left as initialised: a fixed random feature map of the
   tokens (word identity plus position), which the UNet learns to read. Training them too
   would cost a forward and backward pass of both per step, more than a 2-core CPU can spare;
3. the VAE (``AutoencoderKL``, 64 px <-> 8x8x4 latents, SDXL's factor 8; convolutions only, so
   it trains on 32 px crops) as an autoencoder;
4. the UNet (``UNet2DConditionModel`` with SDXL's text-time conditioning) on the VAE's latents
   and the cached text embeddings: epsilon prediction, min-SNR weighting, an EMA of the
   weights, and 10 % of captions dropped (to "" or to the production negative prompt, so
   classifier-free guidance with either works).

It writes a ``save_pretrained`` folder (fp16 weights, under 10 MB) that loads with
``DiffusionPipeline.from_pretrained`` like stabilityai/stable-diffusion-xl-base-1.0, plus
``TRAINING.json`` (seed, data and steps, losses, wall time). The committed copy lives in
``sleeve/assets/base-model`` with its checksums; see :mod:`sleeve.basemodel`. Every random draw
comes from ``--seed``; the same seed, thread count and library versions on the same CPU give
the same weights (floating-point reductions differ between CPU types, so another machine gives
an equally good model, not the same bytes).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

SEED = 0
RESOLUTION = 64
# Sizes of the run (``--scale`` multiplies the step counts; 1.0 is the committed model's run).
LABEL_SETS, DRAWS_PER_LABELS, OTHER_IMAGES = 3000, 4, 600
VAE_STEPS, VAE_BATCH, VAE_CROP, VAE_LR = 1000, 32, 32, 1e-3
DECODER_STEPS, DECODER_LR = 500, 5e-4
UNET_STEPS, UNET_BATCH, UNET_LR = 2000, 32, 5e-4
CAPTION_DROPOUT = 0.1
EMA_DECAY = 0.999
SNR_GAMMA = 5.0
TEXT_HIDDEN, TEXT_LAYERS = 64, 3


# ---------------------------------------------------------------- tokenizer

def vocabulary() -> list[str]:
    """Every word the production prompts and captions use (template, negative prompt, lexicon)."""
    from inference import lexicon
    from inference.prompts import NEGATIVE
    from simulation.art import OBJECT_WORDS
    from simulation.palette import COLOURS, MOODS

    template = ("album cover art square composition a single scene of mood colour palette music centered "
                "subject no text or lettering album cover palette tones photo of a person dog cat")
    parts = [template, NEGATIVE, *COLOURS, *MOODS, *OBJECT_WORDS, *lexicon.OBJECTS.values(),
             *lexicon.MOODS.values(), *lexicon.COLOURS.values(), *lexicon.PALETTE_HINTS.values(),
             *lexicon.GENRE_STYLE.values(), lexicon.DEFAULT_STYLE, *lexicon.GENRES.values(),
             *(d[1] for d in lexicon.GENRE_DEFAULTS.values()), *lexicon.DEFAULT_SCENES]
    return sorted(set(re.findall(r"[a-z]+", " ".join(parts).lower())))


def bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges learnt on ``words`` (each once) until every word is a single symbol. Applying
    merges by rank, as CLIP's tokenizer does, then reproduces that: one token per word. Ties go
    to the alphabetically first pair, so the merges are a pure function of the words."""
    from sleeve.tinymodel import bytes_to_unicode

    table = bytes_to_unicode()
    pieces = [[table[b] for b in w.encode()] for w in words]
    pieces = [p[:-1] + [p[-1] + "</w>"] for p in pieces]
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for p in pieces:
            for pair in zip(p, p[1:], strict=False):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        merged = best[0] + best[1]
        for n, p in enumerate(pieces):
            out, i = [], 0
            while i < len(p):
                if i + 1 < len(p) and (p[i], p[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(p[i])
                    i += 1
            pieces[n] = out


def write_tokenizer(directory: Path, words: list[str]) -> int:
    """CLIP tokenizer files for ``words``; returns the vocabulary size."""
    from sleeve.tinymodel import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    merges = bpe_merges(words)
    vocab = chars + [c + "</w>" for c in chars]
    seen = set(vocab)
    for a, b in merges:
        if a + b not in seen:
            seen.add(a + b)
            vocab.append(a + b)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return len(vocab)


# ---------------------------------------------------------------- data

def make_data(rng: random.Random, label_sets: int, draws: int, others: int):
    """Covers (uint8 N x 64 x 64 x 3) with, per cover, its label set's prompt and captions; plus
    other pictures (catalogue-style covers, synthetic portraits) the VAE should also encode."""
    import io

    import numpy as np
    from PIL import Image

    from crawlers.catalogue import draw_cover as catalogue_cover
    from inference.prompts import build_prompt
    from simulation.art import draw_cover, random_labels
    from training.photos import synthetic_photos

    images, texts, owner = [], [], []
    for n in range(label_sets):
        labels = random_labels(rng)
        prompt = build_prompt(labels)
        texts.append([prompt.positive, *prompt.captions])
        for _ in range(draws):
            images.append(np.asarray(draw_cover(labels, rng, RESOLUTION)))
            owner.append(n)
    extra = []
    for n in range(others):
        if n % 4 == 3:
            photo = synthetic_photos(1, seed=rng.getrandbits(31))[0]
            image = Image.open(io.BytesIO(photo)).convert("RGB")
        else:
            image = Image.open(io.BytesIO(catalogue_cover(rng, 128))).convert("RGB")
        extra.append(np.asarray(image.resize((RESOLUTION, RESOLUTION), Image.Resampling.BICUBIC)))
    return np.stack(images), texts, np.array(owner), np.stack(extra)


def to_tensor(batch):
    import torch

    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ---------------------------------------------------------------- model

def build_pipeline_parts(tokenizer_dir: Path):
    """Fresh (random) SDXL-architecture parts at the base model's size."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer(vocab=str(tokenizer_dir / "vocab.json"), merges=str(tokenizer_dir / "merges.txt"),
                              model_max_length=77)
    text_config = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN, num_attention_heads=4,
        num_hidden_layers=TEXT_LAYERS, vocab_size=len(tokenizer), max_position_embeddings=77, hidden_act="gelu",
        projection_dim=TEXT_HIDDEN,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config))
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(4, 8),
        transformer_layers_per_block=(1, 1), use_linear_projection=True,
        cross_attention_dim=2 * TEXT_HIDDEN,  # both text encoders' hidden states, concatenated
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + TEXT_HIDDEN,  # 6 time ids x 8 + pooled text
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 64, 64), sample_size=RESOLUTION, mid_block_add_attention=False,
    )
    # SDXL's noise schedule; "trailing" spacing starts sampling from pure noise, which matters at
    # the few (4-8) steps a CPU can afford.
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        timestep_spacing="trailing", steps_offset=1,
    )
    return tokenizer, text_encoder, text_encoder_2, unet, vae, scheduler


def count_params(*models) -> int:
    return sum(p.numel() for m in models for p in m.parameters())


# ---------------------------------------------------------------- training

def decoder_stage(vae, covers, stage: Path, seed: int, scale: float, log) -> dict:
    """The decoder fine-tuning, or its saved result. It draws from its own generator and leaves
    the encoder (so the latents) alone, so it does not change what the UNet stage sees."""
    import torch

    saved = stage / "decoder.safetensors"
    if saved.is_file():
        from safetensors.torch import load_file

        vae.load_state_dict(load_file(saved), strict=False)
        log(f"decoder from {saved}")
        return json.loads((stage / "decoder_stats.json").read_text())
    from safetensors.torch import save_file

    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    stats = finetune_decoder(vae, covers, max(1, round(DECODER_STEPS * scale)),
                             torch.Generator().manual_seed(seed + 2), log)
    vae.requires_grad_(False)
    state = {k: v.contiguous() for k, v in vae.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
    save_file(state, str(saved))
    (stage / "decoder_stats.json").write_text(json.dumps(stats))
    save_reconstructions(vae, covers[-16:], stage / "decoder_reconstructions.png")
    return stats


def train_vae(vae, covers, others, steps: int, gen, log) -> dict:
    import numpy as np
    import torch

    pool = np.concatenate([covers, others])
    opt = torch.optim.AdamW(vae.parameters(), lr=VAE_LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=VAE_LR, total_steps=steps, pct_start=0.05)
    vae.train()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(pool), (VAE_BATCH,), generator=gen).numpy()
        top, left = (int(v) for v in torch.randint(0, RESOLUTION - VAE_CROP + 1, (2,), generator=gen))
        x = to_tensor(pool[idx, top:top + VAE_CROP, left:left + VAE_CROP])
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(3)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        rec = (recon - x).pow(2).mean() + 0.5 * (recon - x).abs().mean()
        kl = posterior.kl().mean() / (3 * VAE_CROP * VAE_CROP)
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(rec.detach()))
        if (step + 1) % 100 == 0:
            log(f"vae step {step + 1}/{steps} recon {np.mean(losses[-100:]):.4f}")
    vae.eval()
    return {"recon_loss_last100": float(np.mean(losses[-100:]))}


def finetune_decoder(vae, covers, steps: int, gen, log) -> dict:
    """Sharpen the decoder with the encoder frozen: the latents (what the UNet learns to make)
    stay exactly as they are, the decoder learns to draw them back more faithfully. It trains on
    4x4 crops of whole-cover latents against the matching 32 px crops of the covers."""
    import numpy as np
    import torch

    with torch.no_grad():
        means = torch.cat([vae.encode(to_tensor(covers[i:i + 256])).latent_dist.mean
                           for i in range(0, len(covers), 256)])
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    opt = torch.optim.AdamW(params, lr=DECODER_LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=DECODER_LR, total_steps=steps, pct_start=0.05)
    vae.decoder.train()
    side, losses = VAE_CROP // 8, []
    for step in range(steps):
        idx = torch.randint(0, len(covers), (VAE_BATCH,), generator=gen)
        top, left = (int(v) for v in torch.randint(0, RESOLUTION // 8 - side + 1, (2,), generator=gen))
        z = means[idx, :, top:top + side, left:left + side]
        x = to_tensor(covers[idx.numpy(), 8 * top:8 * (top + side), 8 * left:8 * (left + side)])
        recon = vae.decode(z).sample
        loss = (recon - x).pow(2).mean() + 0.5 * (recon - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            log(f"decoder step {step + 1}/{steps} recon {np.mean(losses[-100:]):.4f}")
    vae.eval()
    return {"decoder_steps": steps, "decoder_recon_loss_last100": float(np.mean(losses[-100:]))}


def save_reconstructions(vae, covers, path: Path) -> None:
    """Originals above, the VAE's reconstructions below: to see what the latents keep."""
    import torch
    from PIL import Image

    x = to_tensor(covers)
    with torch.no_grad():
        r = vae.decode(vae.encode(x).latent_dist.mean).sample
    sheet = Image.new("RGB", (RESOLUTION * len(covers), 2 * RESOLUTION))
    for i, (a, b) in enumerate(zip(x, r, strict=True)):
        for row, t in enumerate((a, b)):
            pixels = ((t.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            sheet.paste(Image.fromarray(pixels), (i * RESOLUTION, row * RESOLUTION))
    sheet.save(path)


def encode_latents(vae, covers):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(covers), 256):
            out.append(vae.encode(to_tensor(covers[i:i + 256])).latent_dist.mean)
    latents = torch.cat(out)
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    return latents * scaling, scaling


def encode_texts(tokenizer, encoders, captions: list[str], batch: int = 256) -> dict:
    """``prompt_embeds`` (both encoders' penultimate hidden states, concatenated, as the SDXL
    pipeline builds them) and ``pooled`` for every caption, in fp16 to keep them in memory."""
    import torch

    embeds, pooled = [], []
    with torch.no_grad():
        for i in range(0, len(captions), batch):
            ids = tokenizer(captions[i:i + batch], padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").input_ids
            outs = [encoder(ids, output_hidden_states=True) for encoder in encoders]
            embeds.append(torch.cat([o.hidden_states[-2] for o in outs], dim=-1).half())
            pooled.append(outs[-1][0].half())  # the projection encoder comes last: its text_embeds
    return {"prompt_embeds": torch.cat(embeds), "pooled": torch.cat(pooled)}


def train_unet(unet, text: dict, scheduler, latents, caption_ids, steps: int, gen, log, snapshot=None) -> dict:
    """``caption_ids[i]`` lists the rows of ``text`` that may caption cover ``i``: its positive
    prompt first, then its training captions; rows 0 and 1 are "" and the negative prompt."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel, compute_snr

    noise_sched = DDPMScheduler.from_config(scheduler.config)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=UNET_LR, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=UNET_LR, total_steps=steps, pct_start=0.05,
                                                final_div_factor=20)
    ema = EMAModel(params, decay=EMA_DECAY, use_ema_warmup=True)
    time_ids = torch.tensor([[RESOLUTION, RESOLUTION, 0, 0, RESOLUTION, RESOLUTION]], dtype=torch.float32)
    unet.train()
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(latents), (UNET_BATCH,), generator=gen)
        u = torch.rand(UNET_BATCH, generator=gen).tolist()
        rows = []
        for i, draw in zip(idx.tolist(), u, strict=True):
            variants = caption_ids[i]
            if draw < CAPTION_DROPOUT:
                rows.append(0 if draw < CAPTION_DROPOUT / 2 else 1)  # unconditional: "" or the negative prompt
            elif draw < 0.7:
                rows.append(variants[0])  # the positive prompt generation uses
            else:
                rows.append(variants[1 + int((draw - 0.7) / 0.3 * (len(variants) - 1))])  # a training caption
        rows = torch.tensor(rows)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (UNET_BATCH,), generator=gen)
        pred = unet(noise_sched.add_noise(x0, noise, t), t, text["prompt_embeds"][rows].float(),
                    added_cond_kwargs={"text_embeds": text["pooled"][rows].float(),
                                       "time_ids": time_ids.expand(UNET_BATCH, 6)}).sample
        snr = compute_snr(noise_sched, t)
        weight = torch.minimum(snr, torch.full_like(snr, SNR_GAMMA)) / snr
        loss = ((pred - noise).pow(2).mean(dim=(1, 2, 3)) * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema.step(params)
        losses.append(float(loss.detach()))
        if (step + 1) % 100 == 0:
            log(f"unet step {step + 1}/{steps} loss {np.mean(losses[-100:]):.4f}")
        if snapshot and (step + 1) % 500 == 0 and step + 1 < steps:
            snapshot(ema, params, step + 1)  # a look at the model so far (EMA weights)
    ema.copy_to(params)
    unet.eval()
    return {"loss_last100": float(np.mean(losses[-100:]))}


def train(output_dir: Path, seed: int = SEED, threads: int = 1, scale: float = 1.0, label_sets: int = LABEL_SETS,
          stages: Path | None = None, log=print) -> dict:
    """Train the base model into ``output_dir``. ``stages`` (default: a sibling folder) keeps the
    trained VAE (a rerun with the same folder starts from it) and snapshots of the model every
    500 UNet steps, to look at while it trains."""
    import tempfile

    import torch
    from diffusers import StableDiffusionXLPipeline

    started = time.perf_counter()
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    covers, texts, owner, others = make_data(rng, label_sets, DRAWS_PER_LABELS, round(OTHER_IMAGES * label_sets / LABEL_SETS))
    log(f"data: {len(covers)} covers of {len(texts)} label sets, {len(others)} other pictures "
        f"({time.perf_counter() - started:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        words = vocabulary()
        write_tokenizer(Path(tmp), words)
        tokenizer, te1, te2, unet, vae, scheduler = build_pipeline_parts(Path(tmp))
    vae_steps, unet_steps = max(1, round(VAE_STEPS * scale)), max(1, round(UNET_STEPS * scale))
    stage = stages or output_dir.parent / f"{output_dir.name}.stages"
    if (stage / "vae" / "config.json").is_file():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(stage / "vae")
        vae_stats = json.loads((stage / "vae_stats.json").read_text())
        torch.manual_seed(seed + 1)  # the random draws after the VAE stage, as in an uninterrupted run
        gen.set_state(torch.load(stage / "generator.pt", weights_only=True))
        log(f"vae from {stage / 'vae'}")
    else:
        vae_stats = train_vae(vae, covers, others, vae_steps, gen, log)
        vae.save_pretrained(stage / "vae")
        (stage / "vae_stats.json").write_text(json.dumps(vae_stats))
        torch.save(gen.get_state(), stage / "generator.pt")
        torch.manual_seed(seed + 1)
        save_reconstructions(vae, covers[-16:], stage / "vae_reconstructions.png")
    latents, scaling = encode_latents(vae, covers)
    log(f"vae done: {vae_stats}, latent scaling {scaling:.4f} ({time.perf_counter() - started:.0f} s)")
    vae.requires_grad_(False)
    vae_stats.update(decoder_stage(vae, covers, stage, seed, scale, log))
    from inference.prompts import NEGATIVE

    captions, caption_rows = ["", NEGATIVE], []
    for variants in texts:
        caption_rows.append(list(range(len(captions), len(captions) + len(variants))))
        captions += variants
    text = encode_texts(tokenizer, [te1, te2], captions)
    log(f"text embeddings of {len(captions)} captions ({time.perf_counter() - started:.0f} s)")
    def pipeline():
        return StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tokenizer,
                                         tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                         force_zeros_for_empty_prompt=False)  # "" was the unconditional in training

    def snapshot(ema, params, step):
        import copy

        saved = [p.detach().clone() for p in params]
        ema.copy_to(params)
        copy.deepcopy(pipeline()).save_pretrained(stage / f"unet-step-{step}")
        for p, value in zip(params, saved, strict=True):
            p.data.copy_(value)
        log(f"snapshot of the model at step {step} in {stage / f'unet-step-{step}'}")

    unet_stats = train_unet(unet, text, scheduler, latents, [caption_rows[o] for o in owner], unet_steps, gen, log,
                            snapshot)
    pipe = pipeline()
    pipe.to(torch.float16)
    output_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(output_dir)
    record = {
        "seed": seed, "threads": threads, "scale": scale, "resolution": RESOLUTION, "vocabulary_words": len(words),
        "data": {"covers": len(covers), "label_sets": len(texts), "other_pictures": len(others)},
        "vae": {"steps": vae_steps, "batch": VAE_BATCH, "crop": VAE_CROP, "lr": VAE_LR, **vae_stats, "latent_scaling": scaling},
        "unet": {"steps": unet_steps, "batch": UNET_BATCH, "lr": UNET_LR, "ema_decay": EMA_DECAY,
                 "caption_dropout": CAPTION_DROPOUT, "snr_gamma": SNR_GAMMA, **unet_stats},
        "text_encoders": "frozen at their seeded initialisation",
        "parameters": count_params(unet, vae, te1, te2), "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    (output_dir / "TRAINING.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: fastest on a shared CPU, and what the committed model used)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the training steps (quick trials)")
    parser.add_argument("--label-sets", type=int, default=LABEL_SETS, help="label sets to draw covers of")
    parser.add_argument("--stages", type=Path, help="folder for the trained VAE and snapshots (default: beside)")
    args = parser.parse_args(argv)
    record = train(args.output_dir, args.seed, args.threads, args.scale, args.label_sets, args.stages,
                   log=lambda m: print(m, flush=True))
    print(json.dumps(record, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

