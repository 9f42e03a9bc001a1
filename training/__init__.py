"""Sleeve training: snapshot, LoRA/DreamBooth trainer, evaluation, gate, registry, GPU jobs."""
