"""The live demo: a web page that makes songs with this repository's checkpoints (``python -m src.demo``)."""
