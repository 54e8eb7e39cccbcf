"""Learned models: the symbolic planner, the mel-diffusion renderer, the DPO trainer."""
