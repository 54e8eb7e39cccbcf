"""Hybrid AI music generation: symbolic planner, mel-diffusion renderer, DPO alignment."""
