"""The small preset's whole path on a CPU: ``run_full_pipeline.sh --preset small`` with the preset's real
settings except sizes and steps, every stage reached.

    .venv/bin/python -m bench.small_smoke [--work DIR] [--songs 8] [--out docs/results/small_smoke_cpu.json]

What is overridden (config overlays in ``DIR/config``, each ``base:`` the repository's own file): two
music21 collections of a few files, POP909's first ``--songs`` songs packed from ``../shared/datasets/POP909``
and taken through ``--mirror`` (the download path with its checksums and safe extraction), MAESTRO off (no
offline copy), a few hundred audio segments and pairs, models of a few thousand parameters, 3 steps per
training stage, and every output under ``DIR``. Everything else is config/*_small.yaml as it is: the
tokenizer, the 128-band mel grid, DPO with on-policy pairs, the demo songs with the neural renderer and
the evaluation report. ``tests/test_pipeline.py::test_small_preset_smoke`` (slow) runs the same.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import machine
from src.data.pop909_source import pack_local_copy
from src.utils.io import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
POP909 = ROOT.parent / "shared" / "datasets" / "POP909"


def overlays(work: Path) -> dict[str, dict]:
    """Each stage's overlay on the repository's small config: sizes, steps and paths."""
    steps = {"max_steps": 3, "eval_every": 3, "log_every": 1, "warmup_steps": 1, "num_workers": 0}
    data = str(work / "data/processed/{preset}")
    return {
        "data_small.yaml": {
            "raw_dir": str(work / "data/raw"),
            "processed_dir": data,
            "music21": {
                "collections": [
                    {
                        "name": "bach",
                        "style": "CLASSICAL",
                        "pattern": "bach/bwv2*.mxl",
                        "max_files": 24,
                        "default_tempo": 80.0,
                        "default_program": 52,
                    },
                    {
                        "name": "oneills",
                        "style": "FOLK",
                        "pattern": "oneills1850/0001-0050.abc",
                        "default_tempo": 112.0,
                        "default_program": 40,
                    },
                ]
            },
            "maestro": {"enabled": False},
            "audio": {"train_pieces": 12, "validation_pieces": 3, "test_pieces": 3, "max_segments_per_piece": 2},
            "preference": {
                "out_path": str(work / "data/subsets/{preset}/preference_data.json"),
                "train_pairs": 40,
                "validation_pairs": 8,
            },
        },
        "symbolic_small.yaml": {
            "data_dir": data,
            "out_dir": str(work / "checkpoints/symbolic/{preset}"),
            "run_dir": str(work / "runs/symbolic"),
            "model": {"d_model": 32, "n_heads": 2, "n_enc_layers": 1, "n_dec_layers": 2, "block_size": 256},
            "train": {**steps, "global_batch": 4, "micro_batch": 2, "sample_every": 3, "sample_tokens": 32},
        },
        "renderer_small.yaml": {
            "data_dir": data,
            "out_dir": str(work / "checkpoints/renderer/{preset}"),
            "run_dir": str(work / "runs/renderer"),
            "model": {
                "d_token": 32,
                "token_layers": 1,
                "token_heads": 2,
                "channels": [8, 16],
                "attn_levels": [1],
                "heads": 2,
                "roll_channels": 2,
            },
            "train": {
                **steps,
                "global_batch": 4,
                "micro_batch": 2,
                "val_segments": 4,
                "sample_every": 3,
                "sample_steps": 2,
            },
        },
        "alignment_small.yaml": {
            "symbolic_ckpt": str(work / "checkpoints/symbolic/{preset}/best.pt"),
            "data_dir": data,
            "pref_data": str(work / "data/subsets/{preset}/preference_data.json"),
            "out_dir": str(work / "checkpoints/aligned/{preset}"),
            "run_dir": str(work / "runs/aligned"),
            "on_policy": {"conditions": 4, "samples": 2, "max_new_tokens": 24, "min_margin": 0.0},
            "train": {**steps, "global_batch": 4, "micro_batch": 2},
        },
        "generation.yaml": {
            "checkpoints": [
                str(work / "checkpoints/aligned/{preset}/best.pt"),
                str(work / "checkpoints/symbolic/{preset}/best.pt"),
            ],
            "renderer_checkpoint": str(work / "checkpoints/renderer/{preset}/best.pt"),
            "output_dir": str(work / "outputs"),
            "neural": {"steps": 2, "griffin_lim_iters": 2},
        },
        "eval.yaml": {"conditions": 4, "max_bars": 4, "train_pieces": 40},
    }


def write_overlays(work: Path) -> Path:
    config = work / "config"
    config.mkdir(parents=True, exist_ok=True)
    for name, over in overlays(work).items():
        text = yaml.safe_dump({"base": str(ROOT / "config" / name), **over}, sort_keys=False)
        write_text(config / name, text)
    return config


def run(work: Path, songs: int) -> dict:
    """Pack the mirror, write the overlays, run the pipeline; its stage times and log."""
    if not POP909.is_dir():
        raise FileNotFoundError(f"{POP909}: the local POP909 copy is needed (see ../shared/datasets/README.md)")
    mirror = work / "mirror"
    pack_local_copy(POP909, mirror, songs=songs)
    config = write_overlays(work)
    cmd = ["bash", "run_full_pipeline.sh", "--preset", "small", "--config_dir", str(config), "--mirror", str(mirror)]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    write_text(work / "pipeline.log", log)
    if proc.returncode != 0:
        last = next((line for line in reversed(log.splitlines()) if line.strip()), "")
        raise RuntimeError(
            f"the small smoke run failed (exit {proc.returncode}): {last} (log: {work / 'pipeline.log'})"
        )
    times = dict(re.findall(r"^  (\d [^\n]*?|setup|total)\s{2,}(\d+)s$", proc.stdout, re.M))
    return {
        "command": " ".join(cmd),
        "machine": machine(),
        "pop909_songs": songs,
        "wall_s": round(time.time() - t0, 1),
        "stage_s": {k.strip(): int(v) for k, v in times.items()},
        "overlays": overlays(Path("WORK")),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="", help="folder for every output (default: a new temporary folder)")
    ap.add_argument("--songs", type=int, default=8, help="POP909 songs packed into the mirror")
    ap.add_argument("--out", default="docs/results/small_smoke_cpu.json")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="small_smoke_"))
    result = run(work, args.songs)
    write_json(ROOT / args.out, result)
    print(json.dumps(result["stage_s"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
