"""Where this distribution's plugins write in a run's output folder (the core names only its
own files): the dashboard's PNGs and json_export's two files, under training_viz/.

    <output_dir>/training_viz/training_step_000050.png   the dashboard at a step
    <output_dir>/training_viz/training_latest.png        the newest dashboard
    <output_dir>/training_viz/metrics_history.json       every step's metrics (json_export)
    <output_dir>/training_viz/text_samples.json          every text sample (json_export)
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "training_viz"


def viz_folder(output_dir: str | Path) -> Path:
    return Path(output_dir) / FOLDER


def dashboard_png(output_dir: str | Path, step: int) -> Path:
    return viz_folder(output_dir) / f"training_step_{step:06d}.png"


def dashboard_latest(output_dir: str | Path) -> Path:
    return viz_folder(output_dir) / "training_latest.png"


def metrics_history(output_dir: str | Path) -> Path:
    return viz_folder(output_dir) / "metrics_history.json"


def text_samples(output_dir: str | Path) -> Path:
    return viz_folder(output_dir) / "text_samples.json"
