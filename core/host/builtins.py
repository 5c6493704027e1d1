"""Plugins that ship inside the core; registered before any entry point, blockable like
the others (`-p no:progress`). Overridable defaults mark their hooks `trylast`."""

from ..optim.builtin import ShippedOptimizers
from .progress import ConsoleProgress

# (name, factory): a fresh instance per plugin manager, so runs in one process share no state.
BUILTINS = (("progress", ConsoleProgress), ("optimizers", ShippedOptimizers))
