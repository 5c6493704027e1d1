"""slimcore: train GPT-style language models on streamed text, extended by plugins.

The public API for plugin authors is what this module exports; see docs/plugins.md.
Names load on first use (PEP 562), so a process that needs only the chart contract, such as
the dashboard's render process, does not pay for importing torch.
"""

import importlib

_EXPORTS = {
    "IGNORE_INDEX": "batch", "Batch": "batch", "Chart": "charts", "ChartData": "charts", "installed_charts": "charts",
    "cache_dir": "cache",
    "RunConfig": "config", "RunPaths": "outputs", "Range": "config", "NonEmpty": "config", "ConfigError": "errors", "TrainingHalted": "errors", "UserError": "errors",
    "describe_error": "errors",
    "hookimpl": "hookspecs", "TrainingMetrics": "metrics", "Run": "run",
    "TextSample": "sampling", "Tokenizer": "tokenizer", "Checkpoint": "checkpoint",
    "DataSource": "source",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'slimcore' has no attribute {name!r}")
