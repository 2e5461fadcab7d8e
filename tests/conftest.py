"""Shared fixtures: the real nuScenes scene from ../shared (skipped where a clone lacks it), and a tiny simulated
nuScenes dataset exported once per session.

The simulated dataset: 2 scenes x 6 s at 320x180 (scene-0061 in mini_train, scene-0103 in mini_val), seed 3 (its mini_val scene shows all ten
detection classes within their evaluation ranges, so mAP is meaningful): 12 samples
per scene, 72 camera cycles per scene. Use it read-only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SCENE = REPO_ROOT.parent / "shared" / "data" / "nuscenes-real-scene-0523"


@pytest.fixture(scope="session")
def real_scene_root() -> Path:
    """Dataroot of the real nuScenes scene-0523 (v1.0-trainval), beside the clone in ../shared."""
    if not (REAL_SCENE / "v1.0-trainval" / "scene.json").is_file():
        pytest.skip(f"real nuScenes scene not found at {REAL_SCENE} (CI has it; a plain clone may not)")
    return REAL_SCENE


@dataclass(frozen=True)
class SimDataset:
    dataroot: Path
    version: str
    summary: object  # replay.export.dataset.ExportSummary


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> SimDataset:
    """Export the tiny dataset (about 10-20 s on this machine) and return where it is."""
    from replay.export.dataset import ExportConfig, export_dataset

    root = tmp_path_factory.mktemp("sim_dataset")
    cfg = ExportConfig(out=root, scenes=2, seed=3, version="v1.0-mini", width=320, height=180, duration_s=6.0, workers=2)
    summary = export_dataset(cfg)
    return SimDataset(dataroot=root, version=cfg.version, summary=summary)


@pytest.fixture(scope="session")
def sim_nusc(sim_dataset):
    """The tiny dataset loaded by nuscenes-devkit."""
    from nuscenes.nuscenes import NuScenes

    return NuScenes(sim_dataset.version, str(sim_dataset.dataroot), verbose=False)
