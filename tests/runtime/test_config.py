"""runtime.yaml validation: the shipped file is valid, and each kind of mistake stops the CLI with one
message naming the key, and a non-zero exit."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli.main import main
from runtime.config import DEFAULT_CONFIG, ConfigError, RuntimeConfig, config_from_dict, load_config


def test_shipped_runtime_yaml_is_valid_and_matches_defaults():
    cfg = load_config(DEFAULT_CONFIG)
    # Every documented default in runtime.yaml agrees with the model's defaults (paths resolved aside).
    d = cfg.model_dump(mode="json")
    ref = RuntimeConfig().model_dump(mode="json")
    for section in ("ray", "stages", "pipeline", "sync"):
        assert d[section] == ref[section], section
    # 2 cores: the two compute stages take one CPU each; their torch threads follow the stream (auto).
    assert cfg.ray.num_cpus == 2 and cfg.stages.backbone.num_cpus == 1 and cfg.stages.bev.num_cpus == 1
    assert cfg.stages.backbone.torch_threads == 0 and cfg.stages.bev.torch_threads == 0


def test_every_key_is_documented_where_it_stands():
    """Each leaf key line of runtime.yaml carries a comment (on the line or the one after it)."""
    lines = DEFAULT_CONFIG.read_text().splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s.endswith(":"):
            continue
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        assert "#" in line or nxt.startswith("#"), f"undocumented setting: {line!r}"


@pytest.mark.parametrize("raw, key, problem", [
    ({"pipeline": {"max_inflight": 2}}, "pipeline.max_inflight", "unknown key"),
    ({"pipeline": {"max_in_flight": 0}}, "pipeline.max_in_flight", "greater than or equal to 1"),
    ({"pipeline": {"max_in_flight": "two"}}, "pipeline.max_in_flight", "valid integer"),
    ({"stages": {"bev": {"num_cpus": -1}}}, "stages.bev.num_cpus", "greater than or equal to 0"),
    ({"source": {"live": {"drop_prob": 1.5}}}, "source.live.drop_prob", "less than or equal to 1"),
    ({"rayy": {}}, "rayy", "unknown key"),
    ({"model": {"checkpoint": "/nonexistent/w.pt"}}, "model.checkpoint", "checkpoint file not found"),
    ({"source": {"nuscenes": {"dataroot": "/nonexistent/data"}}}, "source.nuscenes.dataroot", "directory not found"),
])
def test_config_errors_name_the_key(raw, key, problem):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    msg = str(err.value)
    assert f"{key}: " in msg and problem in msg, msg
    assert "\n" not in msg  # one problem, one line


def test_several_problems_in_one_message():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"pipeline": {"max_in_flight": 0, "bogus": 1}})
    assert "2 problems" in str(err.value) and "pipeline.bogus: unknown key" in str(err.value)


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "runtime.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.mark.parametrize("command", [["replay", "--dataroot", "."], ["stream"], ["profile"], ["demo"]])
def test_cli_stops_on_unknown_key(tmp_path, capsys, command):
    cfg = _write(tmp_path, {"pipeline": {"max_in_flght": 3}})
    assert main(command + ["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "pipeline.max_in_flght: unknown key" in err and err.count("config error") == 1


def test_cli_missing_checkpoint_and_dataroot(tmp_path, capsys):
    cfg = _write(tmp_path, {})
    assert main(["stream", "--config", str(cfg), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "model.checkpoint: Value error, checkpoint file not found" in capsys.readouterr().err
    assert main(["replay", "--config", str(cfg), "--dataroot", str(tmp_path / "nodata"), "--version", "v1.0-mini"]) == 2
    assert "source.nuscenes.dataroot: Value error, directory not found" in capsys.readouterr().err
    assert main(["replay", "--config", str(cfg)]) == 2
    assert "source.nuscenes.dataroot: required for replay" in capsys.readouterr().err
    assert main(["stream", "--config", str(cfg), "--max-in-flight", "0"]) == 2
    assert "pipeline.max_in_flight" in capsys.readouterr().err


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "data").mkdir()
    cfg = load_config(_write(tmp_path, {"source": {"nuscenes": {"dataroot": "data"}}, "output": {"out_dir": "runs/x"}}))
    assert cfg.source.nuscenes.dataroot == tmp_path / "data"
    assert cfg.output.out_dir == tmp_path / "runs" / "x"


def test_model_options_are_checked_by_perception_config(tmp_path, capsys):
    cfg = _write(tmp_path, {"model": {"bev": {"chanels": 8}}})
    assert main(["stream", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.bev.chanels: unknown key" in err and err.count("config error") == 1


def test_cli_checkpoint_that_is_not_a_model_checkpoint(tmp_path, capsys):
    bad = tmp_path / "notweights.pt"
    bad.write_bytes(b"not a torch file")
    cfg = _write(tmp_path, {})
    assert main(["stream", "--config", str(cfg), "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model.checkpoint: cannot load" in err and err.count("config error") == 1


def test_torch_threads_auto_uses_all_cpus_only_when_stages_never_overlap():
    """stages.*.torch_threads 0 = auto: every CPU of the local Ray with max_in_flight 1 (one stage runs
    at a time), the stage's reserved num_cpus otherwise; more than one thread sleeps when idle."""
    from runtime.config import config_from_dict
    from runtime.supervisor import _options, torch_threads

    auto = {"torch_threads": 0, "num_cpus": 1}
    alone = config_from_dict({"ray": {"num_cpus": 4}, "pipeline": {"max_in_flight": 1}, "stages": {"backbone": auto}})
    overlap = config_from_dict({"ray": {"num_cpus": 4}, "pipeline": {"max_in_flight": 2}, "stages": {"backbone": auto}})
    fixed = config_from_dict({"pipeline": {"max_in_flight": 1}, "stages": {"backbone": {"torch_threads": 3}}})
    assert torch_threads(alone.stages.backbone, alone) == 4
    assert torch_threads(overlap.stages.backbone, overlap, live=True) == 1
    assert torch_threads(overlap.stages.backbone, overlap, live=False) == 4, "a replay has one tick in flight by default"
    assert torch_threads(fixed.stages.backbone, fixed) == 3
    assert _options(alone.stages.backbone, 4)["runtime_env"]["env_vars"]["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "runtime_env" not in _options(fixed.stages.sink, 1)
