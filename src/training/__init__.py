"""Training infrastructure shared by every stage: DDP, checkpoints, optimiser, sampler."""
