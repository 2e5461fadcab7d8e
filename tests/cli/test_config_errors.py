"""A bad model key stops a command before anything starts: one line naming the key, exit 2."""
from __future__ import annotations

import math

import pytest
import yaml

from cli.main import main
from runtime.config import DEFAULT_CONFIG


@pytest.mark.parametrize("command", ["replay", "eval"])
def test_a_nan_score_threshold_exits_2_with_the_key_named(command, tmp_path, capsys):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["model"]["detection"]["score_threshold"] = math.nan
    path = tmp_path / "runtime.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main([command, "--config", str(path), "--dataroot", str(tmp_path), "--version", "v1.0-mini",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.detection.score_threshold: must be a finite number" in err[0]
