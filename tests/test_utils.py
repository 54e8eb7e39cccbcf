"""src.utils: typed configs with presets as overlays, atomic files, the cached step, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from src.data.prepare import DataConfig
from src.eval.config import EvalConfig
from src.generation.config import GenerationConfig
from src.training.dpo import AlignmentConfig
from src.training.renderer import RendererTrainingConfig
from src.training.symbolic import SymbolicConfig
from src.utils.cache import cached_step, fingerprint, recorded
from src.utils.config import ConfigError, load_config, read_yaml, resolve, save_config
from src.utils.config import main as config_main
from src.utils.io import atomic_path


@dataclass
class Inner:
    lr: float = 1e-3
    layers: int = 2


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_load_and_override(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "name: a\ninner: {layers: 4}\n"), ["inner.lr=0.5", "tags=[p, q]"])
    assert cfg == Outer(name="a", inner=Inner(lr=0.5, layers=4), tags=["p", "q"])


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "inner: {layerz: 4}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key 'inner\.layerz'"):
        load_config(Outer, p)


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'inner\.layers' must be an integer"):
        load_config(Outer, write(tmp_path, "inner: {layers: four}\n"))
    with pytest.raises(ConfigError, match=r"'inner\.lr' must be a number"):
        load_config(Outer, None, ["inner.lr=fast"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(Outer, None, ["inner.lr"])


def test_invalid_value_is_config_error(tmp_path):
    p = write(tmp_path, "splits: {validation: 0.7, test: 0.5}\n")
    with pytest.raises(ConfigError, match="validation \\+ test"):
        load_config(DataConfig, p)
    p = write(tmp_path, "music21: {collections: [{name: x, style: ROCK, pattern: '*.abc'}]}\n")
    with pytest.raises(ConfigError, match="style must be one of"):
        load_config(DataConfig, p)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, "nope.yaml")


STAGES = {  # config file stem -> its stage's config class
    "data": DataConfig,
    "symbolic": SymbolicConfig,
    "renderer": RendererTrainingConfig,
    "alignment": AlignmentConfig,
    "generation": GenerationConfig,
    "eval": EvalConfig,
}


@pytest.mark.parametrize("path", sorted(Path("config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_roundtrip(tmp_path, path):
    cls = STAGES[path.stem.split("_")[0]]
    cfg = load_config(cls, path)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(cls, tmp_path / "resolved.yaml") == cfg
    text = path.read_text()
    if "preset:" in text:  # the preset's name is written once, on its own line (comments aside)
        preset = cfg.preset
        code = "\n".join(line.split("#")[0] for line in text.splitlines())
        assert code.count(preset) == 1, f"{path}: preset name {preset!r} written {code.count(preset)} times"


def test_presets_are_overlays_of_one_base_per_stage():
    tiny = load_config(SymbolicConfig, "config/symbolic_tiny.yaml")
    small = load_config(SymbolicConfig, "config/symbolic_small.yaml")
    assert tiny.out_dir == "checkpoints/symbolic/tiny" and small.out_dir == "checkpoints/symbolic/small"
    assert tiny.run_name == "tiny" and tiny.model.d_model == 192 and small.model.d_model == 320
    assert tiny.train.amp == small.train.amp == "bf16"  # inherited from the base
    moved = load_config(SymbolicConfig, "config/symbolic_tiny.yaml", ["preset=micro"])
    assert moved.data_dir == "data/processed/micro" and moved.model.d_model == 192


def test_overlay_merges_mappings_and_replaces_the_rest(tmp_path):
    (tmp_path / "base.yaml").write_text("name: '{preset}-run'\ninner: {lr: 0.1, steps: 10}\nitems: [1, 2]\n")
    (tmp_path / "mid.yaml").write_text("base: base.yaml\ninner: {steps: 20}\n")
    (tmp_path / "top.yaml").write_text("base: mid.yaml\npreset: p\nitems: [3]\n")
    assert resolve(read_yaml(tmp_path / "top.yaml")) == {
        "name": "p-run",
        "inner": {"lr": 0.1, "steps": 20},
        "items": [3],
        "preset": "p",
    }


def test_overlay_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        read_yaml(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml: config file not found .the base of .*c.yaml"):
        read_yaml(tmp_path / "c.yaml")


def test_config_command_prints_resolved_values(capsys):
    assert config_main(["config/alignment_tiny.yaml", "symbolic_ckpt"]) == 0
    assert capsys.readouterr().out.strip() == "checkpoints/symbolic/tiny/best.pt"
    assert config_main(["config/alignment_tiny.yaml", "nonsense"]) == 2
    assert "no top-level key 'nonsense'" in capsys.readouterr().err


def test_cached_step_runs_once_per_inputs(tmp_path):
    calls = []
    out = tmp_path / "out.txt"

    def run() -> dict:
        calls.append(1)
        out.write_text("made")
        return {"made": len(calls)}

    record = tmp_path / "record.json"
    first = cached_step("step", record, fingerprint("a", {"k": 1}), run, [out])
    assert len(calls) == 1 and first == {"fingerprint": fingerprint("a", {"k": 1}), "made": 1}
    again = cached_step("step", record, fingerprint("a", {"k": 1}), run, [out])
    assert again == first and len(calls) == 1  # same inputs: skipped
    cached_step("step", record, fingerprint("a", {"k": 2}), run, [out])
    assert len(calls) == 2  # other inputs: redone
    out.unlink()
    cached_step("step", record, fingerprint("a", {"k": 2}), run, [out])
    assert len(calls) == 3  # an output gone: redone
    record.write_text("{half")
    assert recorded(record, fingerprint("a", {"k": 2})) is None  # a damaged record is no record


def test_cached_step_leaves_no_record_when_interrupted(tmp_path):
    record = tmp_path / "record.json"
    cached_step("step", record, "fp1", lambda: {})

    def fail() -> dict:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cached_step("step", record, "fp2", fail)
    assert not record.exists()  # the old record is gone too: the outputs may be half-replaced


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_pack_checkpoint_round_trip(tmp_path, monkeypatch):
    """bench/pack_checkpoint.py: the pieces join back into the inference part, bit for bit, without resume state."""
    import torch

    from bench import pack_checkpoint

    monkeypatch.setattr(pack_checkpoint, "CHUNK", 4096)
    state = {"model": {"w": torch.randn(3000)}, "model_config": {"d": 4}, "step": 7, "optimizer": {"m": 1}, "rng": [1]}
    torch.save(state, tmp_path / "best.pt")
    pack_checkpoint.pack(str(tmp_path / "best.pt"), str(tmp_path), "sup")
    parts = sorted(tmp_path.glob("sup.part*"))
    assert len(parts) > 2 and all(p.stat().st_size <= 4096 for p in parts)
    pack_checkpoint.join(str(tmp_path), "sup", str(tmp_path / "back" / "best.pt"))
    back = torch.load(tmp_path / "back" / "best.pt", weights_only=True)
    assert set(back) == {"model", "model_config", "step"}
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["step"] == 7
    with pytest.raises(SystemExit, match="no none.part"):
        pack_checkpoint.join(str(tmp_path), "none", str(tmp_path / "x.pt"))
    parts[-1].unlink()  # a piece the channel left behind: refused, nothing written
    with pytest.raises(SystemExit, match="sup.part. is not one complete set"):
        pack_checkpoint.join(str(tmp_path), "sup", str(tmp_path / "y.pt"))
    assert not (tmp_path / "y.pt").exists()
