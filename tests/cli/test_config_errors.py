"""A bad model key or --faults SPEC stops a command before anything starts: one line naming it, exit 2."""
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


@pytest.mark.parametrize("command", ["stream", "replay"])
@pytest.mark.parametrize("spec, words", [("melt:0.1", "unknown fault 'melt'"), ("dead:CAM_BACK", "needs a time"),
                                          ("kill:gpu@1", "unknown stage 'gpu'")])
def test_a_bad_fault_spec_exits_2_with_one_line_naming_it(command, spec, words, capsys):
    assert main([command, "--faults", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bevstream: --faults:") and words in err[0], err
