"""Sleeve training: snapshot, LoRA/DreamBooth trainer, evaluation, gate, GPU jobs."""
