"""Train/validation/test splits by a stable hash of each piece's work (its group)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass
class SplitConfig:
    validation: float = 0.05
    test: float = 0.05
    salt: str = "hybrid-music-v1"  # changing it reshuffles every split

    def __post_init__(self) -> None:
        if not (0 <= self.validation < 1 and 0 <= self.test < 1 and self.validation + self.test < 1):
            raise ValueError(f"validation + test must be in [0, 1), got {self.validation} + {self.test}")


def split_of(group: str, cfg: SplitConfig) -> str:
    """Identical on every run and machine; all versions of one work land together."""
    digest = hashlib.sha256(f"{cfg.salt}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.validation:
        return "validation"
    return "train"
