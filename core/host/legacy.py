"""The old selection hooks, kept working until slimcore 0.3 (CHANGELOG): a plugin that
implements `iterate_batches`, `corpus_text`, `validation_batches`, `save_checkpoint`,
`load_checkpoint` or `export_model` is offered in the registry under its plugin name, as the
old design selected it, through adapters of the new contracts, with one deprecation warning.

As before, the old hooks are `firstresult` calls that every implementer may answer for any
name; the adapters make exactly the calls the core made. This module goes in 0.3, with the
old hookspecs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from ..contracts.checkpointer import Checkpointer, ExportFormat
from ..contracts.errors import UserError
from ..contracts.run import Run
from ..contracts.source import DataSource

SOURCE_HOOKS = ("iterate_batches", "corpus_text", "validation_batches")
CHECKPOINTER_HOOKS = ("save_checkpoint", "load_checkpoint")
EXPORT_HOOKS = ("export_model",)
NEW_FORM = {"iterate_batches": "a slimcore.DataSource subclass from register_data_sources",
            "corpus_text": "DataSource.corpus_text", "validation_batches":
            "DataSource.validation_batches", "save_checkpoint":
            "a slimcore.Checkpointer from register_checkpointers", "load_checkpoint":
            "Checkpointer.load and .newest", "export_model":
            "a slimcore.ExportFormat from register_export_formats"}
REMOVED_IN = "0.3"


def legacy_offers(pm) -> list:
    """Registry offers for the plugins of the old selection hooks (a deprecation warning
    each): a data source for `iterate_batches`, a checkpointer for `save_checkpoint`, an
    export format for `export_model`, each under the plugin's name."""
    from .registry import CHECKPOINTER, DATA_SOURCE, EXPORT_FORMAT, Offer

    offers = []
    for plugin_name, hooks in sorted(old_hooks_by_plugin(pm).items()):
        info = pm.infos.get(plugin_name)
        distribution = f"{info.distribution} {info.version}" \
            if info is not None and info.version != "-" else ""
        warn_deprecated(plugin_name, distribution, hooks)
        if "iterate_batches" in hooks:
            offers.append(Offer(DATA_SOURCE, plugin_name, legacy_source(pm, plugin_name),
                                plugin_name, distribution))
        if "save_checkpoint" in hooks:
            offers.append(Offer(CHECKPOINTER, plugin_name, LegacyCheckpointer(pm, plugin_name),
                                plugin_name, distribution))
        if "export_model" in hooks:
            offers.append(Offer(EXPORT_FORMAT, plugin_name, LegacyExportFormat(pm, plugin_name),
                                plugin_name, distribution))
    return offers


def old_hooks_by_plugin(pm) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for hook in SOURCE_HOOKS + CHECKPOINTER_HOOKS + EXPORT_HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            found.setdefault(impl.plugin_name, []).append(hook)
    return found


def warn_deprecated(plugin: str, distribution: str, hooks: list[str]) -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # once per job
    where = f" ({distribution})" if distribution else ""
    instead = "; ".join(f"{hook} -> {NEW_FORM[hook]}" for hook in hooks)
    print(f"slimcore: warning: plugin '{plugin}'{where} implements {', '.join(hooks)}, the "
          f"old form that goes in slimcore {REMOVED_IN}; register the new one instead "
          f"({instead}; docs/plugins.md)", file=sys.stderr)


def ask(pm, hook: str, **kwargs) -> Any:
    """The old hook's first answer (None when no plugin implements it, or none answers).
    A `run` of None is made from `config` and `tokenizer`: the old hooks took a Run."""
    caller = getattr(pm.hook, hook)
    if not caller.get_hookimpls():
        return None
    if kwargs.get("run", "absent") is None:
        kwargs["run"] = stand_in_run(kwargs.pop("config"), kwargs.pop("tokenizer", None))
    kwargs.pop("config", None)
    kwargs.pop("tokenizer", None)
    return caller(**kwargs)


def stand_in_run(config, tokenizer=None, output_dir: Path | None = None,
                 run_id: str | None = None) -> Run:
    """The Run an old hook is handed outside training (its folder, id, config, tokenizer)."""
    from ..config.schema import parse_config

    if config is None:
        config = parse_config({}, {}, "<defaults>")
    folder = output_dir or Path(config.output.dir or Path("runs") / (config.run.name or "run"))
    return Run(config=config, output_dir=folder, device=torch.device("cpu"),
               tokenizer=tokenizer, run_id=run_id)


def legacy_source(pm, plugin_name: str) -> type[DataSource]:
    """A DataSource class whose stream is what the old `iterate_batches` returns for
    `plugin_name`; its class methods leave the old hooks to host.roles, which asks them
    first for every source."""

    class LegacySource(DataSource):
        name = plugin_name

        def __init__(self, run: Run):
            super().__init__(run)
            batches = pm.hook.iterate_batches(source=plugin_name, run=run)
            if batches is None:
                raise UserError(f"data.source: plugin '{plugin_name}' returned no batches "
                                "from iterate_batches")
            self.batches, self.iterator = batches, iter(batches)
            self.resumable = hasattr(batches, "load_state_dict") and \
                hasattr(batches, "state_dict")

        def __next__(self):
            return next(self.iterator)

        def state_dict(self):
            return self.batches.state_dict() if self.resumable else None

        def load_state_dict(self, state):
            self.batches.load_state_dict(state)

        def close(self):
            close = getattr(self.batches, "close", None) or getattr(self.iterator, "close",
                                                                     None)
            if close is not None:
                close()

    return LegacySource


class LegacyCheckpointer(Checkpointer):
    def __init__(self, pm, plugin_name: str):
        self.pm, self.name = pm, plugin_name

    def save(self, checkpoint, run):
        path = self.pm.hook.save_checkpoint(checkpointer=self.name, run=run,
                                            checkpoint=checkpoint)
        if path is None:
            raise UserError(f"checkpoint.checkpointer: plugin '{self.name}' saved nothing "
                            "(its save_checkpoint returned None)")
        return path

    def load(self, path):
        run = stand_in_run(None, output_dir=Path(path).parent)
        return self._loaded(self.pm.hook.load_checkpoint(checkpointer=self.name, run=run,
                                                         path=str(path)))

    def newest(self, output_dir, run_id):
        run = stand_in_run(None, output_dir=Path(output_dir), run_id=run_id)
        return self._loaded(self.pm.hook.load_checkpoint(checkpointer=self.name, run=run,
                                                         path="auto")) or None

    def _loaded(self, saved):
        if saved is None:
            raise UserError(f"checkpoint.checkpointer: plugin '{self.name}' does not load "
                            "checkpoints (no load_checkpoint answered)")
        return saved


class LegacyExportFormat(ExportFormat):
    def __init__(self, pm, plugin_name: str):
        self.pm, self.name = pm, plugin_name

    def export(self, checkpoint, output, dtype):
        written = self.pm.hook.export_model(format=self.name, checkpoint=checkpoint,
                                            output=output, dtype=dtype)
        if written is None:
            raise UserError(f"--format: plugin '{self.name}' wrote nothing (its export_model "
                            "returned None)")
        return written
