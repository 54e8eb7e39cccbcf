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


def position(group: str, cfg: SplitConfig) -> float:
    """A work's place in [0, 1): a stable hash of its group."""
    digest = hashlib.sha256(f"{cfg.salt}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(group: str, cfg: SplitConfig) -> str:
    """Identical on every run and machine; all versions of one work land together."""
    u = position(group, cfg)
    if u < cfg.test:
        return "test"
    if u < cfg.test + cfg.validation:
        return "validation"
    return "train"


def ensure_held_out(rows: list[dict], cfg: SplitConfig) -> list[str]:
    """A small collection can hash every work into train: then the train work nearest each empty held-out
    split's range moves there (all its pieces), as long as train keeps a work. Rows change in place;
    returns what was done or could not be, for the log and the data summary."""
    notes = []
    works: dict[str, list[dict]] = {}
    for r in rows:
        works.setdefault(r["group"], []).append(r)
    for split, share in (("validation", cfg.validation), ("test", cfg.test)):
        if not share or any(r["split"] == split for r in rows):
            continue
        train = sorted((position(g, cfg), g) for g, rs in works.items() if all(r["split"] == "train" for r in rs))
        if len(train) < 2:
            notes.append(f"no {split} split: {len(works)} works are too few to hold one out")
            continue
        group = train[0][1]
        for r in works[group]:
            r["split"] = split
        notes.append(f"no work hashed into {split}; {group} ({len(works[group])} pieces) was moved there")
    return notes
