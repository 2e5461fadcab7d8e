"""Shared fixtures: the real nuScenes scene from ../shared (skipped where a clone lacks it)."""
from __future__ import annotations

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
