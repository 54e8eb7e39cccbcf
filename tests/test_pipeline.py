"""End to end: run_full_pipeline.sh on a micro configuration (a few pieces, a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from src.utils.config import read_yaml, resolve
from tests.conftest import ROOT


def test_full_pipeline_micro(tmp_path):
    cfg_dir = tmp_path / "config"
    cfg_dir.mkdir()
    data = resolve(read_yaml(ROOT / "config/data_tiny.yaml"))
    data.update(raw_dir=str(tmp_path / "raw"), processed_dir=str(tmp_path / "processed"), workers=2)
    data["splits"].update(validation=0.1, test=0.15)  # a few held-out pieces for the evaluation report
    data["music21"]["collections"] = [
        {
            "name": "bach",
            "style": "CLASSICAL",
            "pattern": "bach/bwv2*.mxl",
            "max_files": 24,
            "default_tempo": 80.0,
            "default_program": 52,
        },
        {
            "name": "ryans",
            "style": "FOLK",
            "pattern": "ryansMammoth/[A-B]*.abc",
            "max_files": 24,
            "default_tempo": 112.0,
            "default_program": 40,
        },
    ]
    sym = resolve(read_yaml(ROOT / "config/symbolic_tiny.yaml"))
    sym.update(
        data_dir=data["processed_dir"], out_dir=str(tmp_path / "ckpt/symbolic/micro"), run_dir=str(tmp_path / "runs")
    )
    sym["model"].update(d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1, block_size=64, max_bars=16)
    sym["train"].update(max_steps=6, eval_every=3, global_batch=4, micro_batch=4, sample_every=6, sample_tokens=32)
    data["audio"].update(
        mel={"n_mels": 32},
        segment_frames=64,
        stride_frames=64,
        train_pieces=8,
        validation_pieces=2,
        max_segments_per_piece=3,
    )
    ren = resolve(read_yaml(ROOT / "config/renderer_tiny.yaml"))
    ren.update(
        data_dir=data["processed_dir"], out_dir=str(tmp_path / "ckpt/renderer/micro"), run_dir=str(tmp_path / "runs")
    )
    ren["model"].update(d_token=32, token_layers=1, channels=[8, 16], attn_levels=[1], heads=2, roll_channels=2)
    ren["train"].update(
        max_steps=4, eval_every=2, global_batch=4, micro_batch=4, sample_every=2, sample_steps=2, val_segments=4
    )
    data["preference"].update(
        out_path=str(tmp_path / "subsets/preference_data.json"), train_pairs=12, validation_pairs=4
    )
    align = resolve(read_yaml(ROOT / "config/alignment_tiny.yaml"))
    align.update(
        symbolic_ckpt=sym["out_dir"] + "/best.pt",
        data_dir=data["processed_dir"],
        pref_data=data["preference"]["out_path"],
        out_dir=str(tmp_path / "ckpt/aligned/micro"),
        run_dir=str(tmp_path / "runs"),
    )
    align["on_policy"].update(conditions=2, samples=2, max_new_tokens=24, min_margin=0.0)
    align["train"].update(max_steps=2, eval_every=2, global_batch=2, micro_batch=2, warmup_steps=1)
    gen = resolve(read_yaml(ROOT / "config/generation.yaml"))
    gen.update(
        checkpoints=[str(tmp_path / "ckpt/aligned/{preset}/best.pt"), str(tmp_path / "ckpt/symbolic/{preset}/best.pt")],
        renderer_checkpoint=str(tmp_path / "ckpt/renderer/{preset}/best.pt"),
        output_dir=str(tmp_path / "outputs"),
    )
    gen["neural"].update(steps=4, overlap_frames=8, griffin_lim_iters=4)
    evaluation = {**resolve(read_yaml(ROOT / "config/eval.yaml")), "conditions": 3, "max_bars": 8, "train_pieces": 40}
    configs = {"data": data, "symbolic": sym, "renderer": ren, "alignment": align}
    for name, obj in [*((f"{k}_micro", v) for k, v in configs.items()), ("generation", gen), ("eval", evaluation)]:
        (cfg_dir / f"{name}.yaml").write_text(yaml.safe_dump(obj))
    cmd = ["bash", str(ROOT / "run_full_pipeline.sh"), "--preset", "micro", "--config_dir", str(cfg_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    demos = sorted(Path(tmp_path / "outputs").glob("demo_*.json"))
    assert [d.stem for d in demos] == ["demo_happy", "demo_peaceful", "demo_sad", "demo_tense"]
    for d in demos:
        meta = json.loads(d.read_text())
        assert meta["facts"]["bars"] == sum(s["bars"] for s in meta["facts"]["sections"])
        assert meta["settings"]["style"] in ("FOLK", "CLASSICAL")  # styles the checkpoint knows
        assert meta["renderer"].startswith("neural") and meta["sample_rate"] == 16000
        assert meta["checkpoint"]["kind"] == "aligned"  # stage 5 prefers the aligned planner
        for ext in ("mid", "wav", "png"):
            assert d.with_suffix(f".{ext}").stat().st_size > 0
    assert "time per stage" in first.stdout and "5 demo songs" in first.stdout and "4 align planner" in first.stdout
    assert "-m src.demo --preset micro" in first.stdout  # the live demo's command, at the end
    report = tmp_path / "outputs/eval/micro/report.md"
    assert report.is_file() and "bigram (floor)" in first.stdout and "6 evaluation report" in first.stdout
    assert (tmp_path / "processed/summary.md").is_file() and (tmp_path / "ckpt/symbolic/micro/best.pt").is_file()
    # a rerun skips what is up to date
    mtime = (tmp_path / "ckpt/symbolic/micro/last.pt").stat().st_mtime
    r_mtime = (tmp_path / "ckpt/renderer/micro/last.pt").stat().st_mtime
    a_mtime = (tmp_path / "ckpt/aligned/micro/last.pt").stat().st_mtime
    demo_mtime = demos[0].stat().st_mtime
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "up to date" in second.stderr
    assert (tmp_path / "ckpt/symbolic/micro/last.pt").stat().st_mtime == mtime
    assert (tmp_path / "ckpt/renderer/micro/last.pt").stat().st_mtime == r_mtime
    assert (tmp_path / "ckpt/aligned/micro/last.pt").stat().st_mtime == a_mtime
    assert demos[0].stat().st_mtime == demo_mtime
    assert "6 evaluation report: up to date" in second.stdout
    # a newer generation config (the report's sampling defaults) redoes the report, and only the report
    gen_yaml = cfg_dir / "generation.yaml"
    report_mtime = report.stat().st_mtime
    os.utime(gen_yaml, (report_mtime + 5, report_mtime + 5))
    third = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "6 evaluation report: up to date" not in third.stdout and "=== 6 evaluation report" in third.stdout
    assert report.stat().st_mtime > report_mtime and demos[0].stat().st_mtime == demo_mtime


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT.parent / "shared/datasets/POP909").is_dir(), reason="local POP909 copy absent")
def test_small_preset_smoke(tmp_path):
    """``run_full_pipeline.sh --preset small`` with the preset's real settings but sizes and steps
    (bench/small_smoke.py): POP909 through --mirror, every stage reached, every artefact outside the repository."""
    from bench.small_smoke import run

    result = run(tmp_path, songs=4)
    stages = ["1 prepare data", "2 train planner", "3 train renderer", "4 align planner (DPO)", "5 demo songs"]
    assert all(s in result["stage_s"] for s in stages), result["stage_s"]
    log = (tmp_path / "pipeline.log").read_text()
    assert "source pop909: 4 pieces" in log and "on-policy pairs" in log
    for name in ("happy", "sad", "tense", "peaceful"):
        meta = json.loads((tmp_path / f"outputs/demo_{name}.json").read_text())
        assert meta["renderer"].startswith("neural") and (tmp_path / f"outputs/demo_{name}.wav").stat().st_size > 0
    assert (tmp_path / "outputs/eval/small/report.md").is_file()
    for kind in ("symbolic", "renderer", "aligned"):
        assert (tmp_path / f"checkpoints/{kind}/small/best.pt").is_file()
