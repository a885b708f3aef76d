"""YAML configs -> frozen dataclasses: coercion, unknown keys, validation, CLI plumbing."""

import dataclasses
import re
from typing import Literal

import click
import pytest
from click.testing import CliRunner

from interplm_jax.cli import command, parse_layers
from interplm_jax.config import config_options, field_help, from_dict, load_yaml, option, to_dict
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
    (tmp_path / "latin1.json").write_bytes('{"name": "prot\u00e9ine"}'.encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.json: not UTF-8 text \(invalid continuation "
                                         r"byte at byte 14\)"):
        read_json(tmp_path / "latin1.json", "missing")
    assert read_json(tmp_path / "ok.json", "missing", dict) == {"a": [1, 2]}
    with pytest.raises(InputError, match=r"ok\.json: holds a JSON object; expected a list"):
        read_json(tmp_path / "ok.json", "missing", list)


@dataclasses.dataclass(frozen=True)
class Opts:
    steps: int = option(10, "training steps")
    lr: float = option(1e-3, "learning rate")
    layers: tuple[int, ...] = option((1, 2), "layers")
    limit: int | None = option(None, "at most this many")
    fast: bool = option(False, "go fast")
    mode: Literal["a", "b"] = option("a", "a mode")
    inner: Inner = option(default_factory=Inner, help="not a command-line value")

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


@click.command()
@click.option("--out", default="o")
@command
@config_options(Opts, "train", skip=("lr",))
def opts_cli(out, cfg):
    click.echo(repr(cfg))


def test_config_options_defaults_file_then_command_line(tmp_path):
    run = lambda *a: CliRunner().invoke(opts_cli, [str(x) for x in a])  # noqa: E731
    r = run()
    assert r.exit_code == 0 and r.output.strip() == repr(Opts())
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 7\n  lr: 0.5\n  limit: 3\n  fast: true\n")
    r = run("--config", path)
    assert r.output.strip() == repr(Opts(steps=7, lr=0.5, limit=3, fast=True))
    r = run("--config", path, "--steps", 9, "--layers", "4, 5", "--limit", "null", "--no-fast",
            "--mode", "b")
    assert r.output.strip() == repr(Opts(steps=9, lr=0.5, layers=(4, 5), limit=None, mode="b"))
    help_ = run("--help").output
    assert "--steps INTEGER" in help_ and "training steps [default: 10]" in help_
    assert "--limit INTEGER|null" in help_ and "--layers INTEGER,..." in help_
    assert "--fast / --no-fast" in help_ and "--lr" not in help_ and "--inner" not in help_


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps: steps must be >= 1, got 0"),
    (["--layers", "1,x"], r"--layers\[1\]: 'x' is not an integer"),
    (["--limit", "many"], "--limit: 'many' is not a valid"),
    (["--mode", "c"], "'c' is not one of 'a', 'b'"),
])
def test_config_options_bad_values_exit_2_naming_the_option(args, message):
    r = CliRunner().invoke(opts_cli, args)
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert re.search(message, r.output), r.output


def test_config_options_file_errors_name_the_section(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 0\n")
    r = CliRunner().invoke(opts_cli, ["--config", str(path)])
    assert r.exit_code == 2 and f"{path}:train: steps must be >= 1" in r.output
    path.write_text("analysis:\n  umap: {k: x}\n")
    with pytest.raises(InputError, match=r"c.yaml:analysis.umap.k: 'x' is not an integer"):
        load_yaml(Inner, path, "analysis.umap")


def test_config_options_reach_a_nested_field(tmp_path):
    @click.command()
    @command
    @config_options(Opts, "train", "inner.k", "steps")
    def cli(cfg):
        click.echo(repr(cfg))

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  steps: 3\n  inner: {k: 4}\n")
    r = CliRunner().invoke(cli, ["--config", str(path), "--k", "8"])
    assert r.exit_code == 0 and r.output.strip() == repr(Opts(steps=3, inner=Inner(8)))
    r = CliRunner().invoke(cli, ["--k", "x"])
    assert r.exit_code == 2 and "Invalid value for '--k'" in r.output
    with pytest.raises(TypeError, match="Opts.inner: no command-line form"):
        config_options(Opts, "train", "inner")
