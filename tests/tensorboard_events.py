"""Reading TensorBoard event files back (tests only): what TensorBoard itself would show."""

from __future__ import annotations

from pathlib import Path

import pytest


def read_events(logdir: str | Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, list]]:
    """``({tag: [(step, value), ...]}, {tag: [image event, ...]})`` of every event file under
    ``logdir`` (its subfolders included), with tensorboard's own ``EventAccumulator``."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    images: dict[str, list] = {}
    folders = sorted({p.parent for p in Path(logdir).rglob("events.out.tfevents.*")})
    assert folders, f"no event files under {logdir}"
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in tags.get("images", []):
            images.setdefault(tag, []).extend(acc.Images(tag))
    return scalars, images
