"""Small classifiers that judge a piece's emotion and style, trained on the labelled real training split.

They turn "does the song sound TENSE / FOLK?" into a number for generated music. Each judge's own
accuracy on the real test split is reported beside what it says about generated songs, so the
reader knows how far to trust it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from src.music.features import SCALAR_METRICS
from src.music.theory import mode_strength


def judge_features(metrics: dict, notes: np.ndarray, qpm: float, programs: list[int]) -> np.ndarray:
    """The judges' input: the scalar metrics, tempo, mode strength and instrumentation size."""
    return np.array(
        [*(metrics[k] for k in SCALAR_METRICS), qpm, mode_strength(notes), len(set(programs))], dtype=np.float64
    )


@dataclass
class Judge:
    """A standardised multinomial logistic regression over :func:`judge_features`."""

    field: str
    classes: list[str]
    model: object
    test_accuracy: float = float("nan")
    test_pieces: int = 0

    @classmethod
    def fit(cls, field: str, x: np.ndarray, y: list[str], seed: int = 0) -> Judge:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        model.fit(x, y)
        return cls(field, sorted(set(y)), model)

    def predict(self, x: np.ndarray) -> list[str]:
        return [str(v) for v in self.model.predict(x)] if len(x) else []

    def score_on(self, x: np.ndarray, y: list[str]) -> float:
        """Accuracy on labelled real pieces; stored as this judge's own accuracy."""
        self.test_accuracy = float(np.mean([a == b for a, b in zip(self.predict(x), y)])) if len(y) else float("nan")
        self.test_pieces = len(y)
        return self.test_accuracy
