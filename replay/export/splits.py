"""Scene names for an exported dataset, taken from the devkit's own splits.

`DetectionEval(..., eval_set='mini_val')` keeps only the samples whose scene *name* is in the
devkit's hard-coded split list, so a simulated dataset must reuse real scene names to be scored
without patches. `v1.0-mini` names come from `mini_train`/`mini_val` (8 + 2 names), `v1.0-trainval`
names from `train`/`val` (700 + 150).
"""
from __future__ import annotations

SPLIT_CHOICES: tuple[str, ...] = ("auto", "train", "val")
VERSIONS: tuple[str, ...] = ("v1.0-mini", "v1.0-trainval")

# Fraction of the scenes that `auto` puts in the validation split (8/2 for ten mini scenes).
AUTO_VAL_FRACTION = 0.2


def split_lists(version: str) -> tuple[list[str], list[str]]:
    """(train names, val names) of the devkit's split lists for `version`."""
    # lazy: importing nuscenes.utils.splits loads the whole devkit (~3.7 s); the exporter's spawned
    # worker processes import this module (through replay.export.dataset) and never need the lists
    from nuscenes.utils import splits

    if version == "v1.0-mini":
        return list(splits.mini_train), list(splits.mini_val)
    if version == "v1.0-trainval":
        return list(splits.train), list(splits.val)
    raise ValueError(f"unsupported version {version!r}; expected one of {VERSIONS}")


def eval_split_name(version: str, split: str) -> str:
    """The devkit's split name (`mini_val`, `val`, ...) for a version and 'train'|'val'."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return f"mini_{split}" if version == "v1.0-mini" else split


def scene_names(version: str, count: int, split: str = "auto") -> list[tuple[str, str]]:
    """`count` (scene name, split) pairs, in scene order.

    split='train' or 'val' takes every name from that split; 'auto' puts the last
    max(1, round(0.2 * count)) scenes in val when count >= 2 (all in train when count == 1),
    i.e. 8 mini_train + 2 mini_val for ten mini scenes.
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"split must be one of {SPLIT_CHOICES}, got {split!r}")
    if count < 1:
        raise ValueError(f"need at least one scene, got {count}")
    train, val = split_lists(version)
    if split == "train":
        n_val = 0
    elif split == "val":
        n_val = count
    else:
        n_val = 0 if count == 1 else max(1, round(AUTO_VAL_FRACTION * count))
    n_train = count - n_val
    if n_train > len(train) or n_val > len(val):
        raise ValueError(
            f"{version} has {len(train)} train and {len(val)} val scene names; asked for "
            f"{n_train} train and {n_val} val (use --version v1.0-trainval for more scenes)"
        )
    return [(name, "train") for name in train[:n_train]] + [(name, "val") for name in val[:n_val]]
