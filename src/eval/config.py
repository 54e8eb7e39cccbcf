"""Settings of the evaluation report (config/eval.yaml; ``python -m src.eval``'s flags override them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    conditions: int = 0  # held-out conditions to use (0 = every piece of the split)
    num_samples: int = 1  # songs per condition and checkpoint
    max_bars: int = 16  # songs follow their piece's section form up to this many bars
    split: str = "test"  # the held-out real music: test | validation
    seed: int = 0
    bigram: bool = True  # sample the bigram floor
    train_pieces: int = 400  # training pieces sampled for the ceiling row and the judges
    workers: int = 0  # processes that generate the songs, one thread each (0 = every core)

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.conditions < 0 or self.num_samples < 1 or self.max_bars < 1 or self.train_pieces < 2:
            raise ValueError("conditions >= 0, num_samples >= 1, max_bars >= 1, train_pieces >= 2")
        if self.split not in ("test", "validation"):
            raise ValueError(f"split must be test or validation, got {self.split!r}")
