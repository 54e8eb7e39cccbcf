"""Evaluation metrics: symbolic music (per piece, between sets) and rendered audio."""
