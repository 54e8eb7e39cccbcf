"""Stage 5's settings (config/generation.yaml): checkpoints, outputs, audio, sampling and the song controls."""

from __future__ import annotations

from dataclasses import dataclass, field

from src.generation.neural_render import NeuralRenderConfig
from src.generation.song import SongControls
from src.models.sampling import SamplingConfig


@dataclass
class GenerationConfig:
    preset: str = "tiny"
    checkpoints: list[str] = field(
        default_factory=lambda: ["checkpoints/aligned/{preset}/best.pt", "checkpoints/symbolic/{preset}/best.pt"]
    )
    renderer_checkpoint: str = "checkpoints/renderer/{preset}/best.pt"
    output_dir: str = "outputs"
    sample_rate: int = 22050
    soundfont: str = ""
    default_forms: dict[str, str] = field(default_factory=dict)
    default_tempo: dict[str, float] = field(default_factory=dict)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # defaults of stage 5, the demos and the report
    controls: SongControls = field(default_factory=SongControls)
    neural: NeuralRenderConfig = field(default_factory=NeuralRenderConfig)
