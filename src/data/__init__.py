"""Stage 1: sources, labels, splits, REMI+ tokeniser and token storage."""
