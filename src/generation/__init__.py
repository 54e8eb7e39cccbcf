"""Stage 5: whole songs from a prompt, with exact controls."""
