"""slimcore: train GPT-style language models on streamed text, extended by plugins.

The public API for plugin authors is what this module exports; see docs/plugins.md.
Names load on first use (PEP 562), so a process that needs only the chart contract, such as
the dashboard's render process, does not pay for importing torch.
"""

import importlib

_EXPORTS = {
    "IGNORE_INDEX": "contracts.batch", "Batch": "contracts.batch",
    "Chart": "contracts.charts", "ChartData": "contracts.charts",
    "Checkpoint": "contracts.checkpoint",
    "Checkpointer": "contracts.checkpointer", "ExportFormat": "contracts.checkpointer",
    "ConfigError": "contracts.errors", "TrainingHalted": "contracts.errors",
    "UserError": "contracts.errors", "describe_error": "contracts.errors",
    "bounded_repr": "contracts.errors", "traceback_wanted": "contracts.errors",
    "OptimizerBuilder": "contracts.optimizer", "ParameterGroups": "contracts.optimizer",
    "Schedule": "contracts.optimizer", "MATRIX": "contracts.optimizer",
    "EMBEDDING": "contracts.optimizer", "GAIN": "contracts.optimizer",
    "Target": "contracts.target", "seconds_to": "contracts.target",
    "TrainingMetrics": "contracts.metrics", "RunPaths": "contracts.paths", "Run": "contracts.run",
    "TextSample": "contracts.samples", "DataSource": "contracts.source",
    "RunConfig": "config.schema", "Range": "config.values", "NonEmpty": "config.values",
    "setting_flag": "commands.arguments",
    "hookimpl": "host.hookspecs", "installed_charts": "host.manager",
    "Tokenizer": "text.tokenizer", "cache_dir": "storage.cache",
    "write_atomically": "storage.atomic", "make_durable": "storage.atomic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'slimcore' has no attribute {name!r}")
