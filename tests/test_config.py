from dataclasses import dataclass, field

import pytest

from src.data.prepare import DataConfig
from src.utils.config import ConfigError, load_config, save_config


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


def test_shipped_configs_load_and_roundtrip(tmp_path):
    from pathlib import Path

    for path in sorted(Path("config").glob("data_*.yaml")):
        cfg = load_config(DataConfig, path)
        save_config(cfg, tmp_path / "resolved.yaml")
        assert load_config(DataConfig, tmp_path / "resolved.yaml") == cfg
