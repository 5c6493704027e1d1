"""slimcore: train GPT-style language models on streamed text, extended by plugins.

The public API for plugin authors is what this module exports; see docs/plugins.md.
"""

from .batch import IGNORE_INDEX, Batch
from .charts import Chart, ChartData
from .config import RunConfig
from .errors import ConfigError, UserError
from .hookspecs import hookimpl
from .metrics import TrainingMetrics
from .run import Run
from .sampling import TextSample
from .state import TrainingState
from .tokenizer import Tokenizer

__all__ = [
    "IGNORE_INDEX", "Batch", "Chart", "ChartData", "ConfigError", "Run", "RunConfig",
    "TextSample", "Tokenizer", "TrainingMetrics", "TrainingState", "UserError", "hookimpl",
]
