"""Names kept for plugins written before slimcore 0.2, each with one deprecation warning; all
of them go in slimcore 0.3 (CHANGELOG). The old selection hooks have their own module
(host/legacy.py).

This is the one module of the core that names shipped plugins' files: the paths `RunPaths`
gave for them before each plugin named its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

REMOVED_IN = "0.3"
# RunPaths attribute -> (the path under the run folder, the plugin that owns it now)
OLD_RUN_PATHS = {
    "checkpoints": ("checkpoints", "three_file"),
    "viz": ("training_viz", "dashboard"),
    "metrics_history": ("training_viz/metrics_history.json", "json_export"),
    "text_samples": ("training_viz/text_samples.json", "json_export"),
    "dashboard_latest": ("training_viz/training_latest.png", "dashboard"),
}
_warned: set[str] = set()


def warn_once(what: str, instead: str) -> None:
    if what not in _warned:
        _warned.add(what)
        print(f"slimcore: warning: {what} is deprecated and goes in slimcore {REMOVED_IN}; "
              f"{instead}", file=sys.stderr)


def old_run_path(root: Path, name: str):
    """RunPaths' old attributes for plugins' files, or AttributeError."""
    if name == "dashboard":
        warn_once("RunPaths.dashboard", "the dashboard plugin names its own files")
        return lambda step: root / "training_viz" / f"training_step_{step:06d}.png"
    if name not in OLD_RUN_PATHS:
        raise AttributeError(f"'RunPaths' object has no attribute '{name}'")
    relative, owner = OLD_RUN_PATHS[name]
    warn_once(f"RunPaths.{name}", f"the {owner} plugin names its own files "
              f"(<output_dir>/{relative})")
    return root / relative
