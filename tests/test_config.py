"""YAML configs -> frozen dataclasses: coercion, unknown keys, validation, CLI plumbing."""

import dataclasses

import click
import pytest
from click.testing import CliRunner

from interplm_jax.cli import command, parse_layers
from interplm_jax.config import field_help, from_dict, load_yaml, option, to_dict
from interplm_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Inner:
    k: int = option(3, "an int")


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = option(1e-3, "learning rate")
    layers: tuple[int, ...] = option((1, 2), "layers")
    name: str | None = option(None, "a name")
    inner: Inner = option(default_factory=Inner, help="nested")

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def test_yaml_scalars_are_coerced(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n  layers: [3, 4]\n  inner: {k: 5}\n")
    cfg = load_yaml(Cfg, path, "train")
    assert cfg == Cfg(lr=1e-4, layers=(3, 4), inner=Inner(5))
    assert to_dict(cfg) == {"lr": 1e-4, "layers": [3, 4], "name": None, "inner": {"k": 5}}
    assert field_help(Cfg)["lr"] == "learning rate"


def test_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n  lrr: 2\n")
    with pytest.raises(InputError, match=r"c.yaml:train: unknown key\(s\) \['lrr'\]"):
        load_yaml(Cfg, path, "train")
    with pytest.raises(InputError, match=r"config.inner.k: 'x' is not an integer"):
        from_dict(Cfg, {"inner": {"k": "x"}})
    with pytest.raises(InputError, match=r"config.inner.k: 2.5 is not an integer"):
        from_dict(Cfg, {"inner": {"k": 2.5}})
    with pytest.raises(InputError, match="config: lr must be positive, got -1.0"):
        from_dict(Cfg, {"lr": -1})
    with pytest.raises(InputError, match="config file not found"):
        load_yaml(Cfg, tmp_path / "missing.yaml")
    path.write_text("a: [\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_yaml(Cfg, path)


def test_parse_layers():
    assert parse_layers("1,2,5-6") == (1, 2, 5, 6)
    assert parse_layers("33, 1, 9") == (1, 9, 33)
    for bad in ("", "a", "1,1", "3-x"):
        with pytest.raises(InputError):
            parse_layers(bad)


def test_cli_turns_input_errors_into_exit_status_2():
    @click.command()
    @command
    def cli():
        raise InputError("proteins.fa:3: protein 'x': empty sequence")

    r = CliRunner().invoke(cli, [])
    assert r.exit_code == 2
    assert "Error: proteins.fa:3: protein 'x': empty sequence" in r.output


def test_read_json_names_the_file(tmp_path):
    from interplm_jax.paths import read_json

    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json(tmp_path / "ok.json", "missing") == {"a": [1, 2]}
    with pytest.raises(InputError, match="^x: not a sweep directory$"):
        read_json(tmp_path / "nope.json", "x: not a sweep directory")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match=r"bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json", "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="^not a directory$"):
        read_json(tmp_path / "file" / "sae.json", "not a directory")
