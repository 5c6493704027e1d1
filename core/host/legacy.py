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
from typing import TYPE_CHECKING, Any

from ..contracts.checkpointer import Checkpointer, ExportFormat
from ..contracts.errors import UserError
from ..contracts.source import DataSource

if TYPE_CHECKING:  # torch stays out of the dashboard's render process, which asks the registry
    from ..contracts.run import Run

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
    """Registry offers for the plugins of the old selection hooks: a data source for
    `iterate_batches`, a checkpointer for `save_checkpoint`, an export format for
    `export_model`, each under the plugin's name (`legacy`: a deprecation warning when used)."""
    from .registry import CHECKPOINTER, DATA_SOURCE, EXPORT_FORMAT, Offer

    offers = []
    for plugin_name, hooks in sorted(old_hooks_by_plugin(pm).items()):
        distribution = distribution_of(pm, plugin_name)
        if "iterate_batches" in hooks:
            offers.append(Offer(DATA_SOURCE, plugin_name, legacy_source(pm, plugin_name),
                                plugin_name, distribution, legacy=True))
        if "save_checkpoint" in hooks:
            offers.append(Offer(CHECKPOINTER, plugin_name, LegacyCheckpointer(pm, plugin_name),
                                plugin_name, distribution, legacy=True))
        if "export_model" in hooks:
            offers.append(Offer(EXPORT_FORMAT, plugin_name, LegacyExportFormat(pm, plugin_name),
                                plugin_name, distribution, legacy=True))
    return offers


def old_hooks_by_plugin(pm) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for hook in SOURCE_HOOKS + CHECKPOINTER_HOOKS + EXPORT_HOOKS:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            found.setdefault(impl.plugin_name, []).append(hook)
    return found


def distribution_of(pm, plugin_name: str) -> str:
    info = pm.infos.get(plugin_name)
    return f"{info.distribution} {info.version}" if info is not None and info.version != "-" \
        else ""


def warn_deprecated(pm, plugin: str) -> None:
    """Once per plugin and job, when an old-form plugin is used."""
    if plugin in pm.deprecations_told or os.environ.get("RANK", "0") != "0":
        return
    pm.deprecations_told.add(plugin)
    hooks = old_hooks_by_plugin(pm).get(plugin, [])
    distribution = distribution_of(pm, plugin)
    where = f" ({distribution})" if distribution else ""
    instead = "; ".join(f"{hook} -> {NEW_FORM[hook]}" for hook in hooks)
    print(f"slimcore: warning: plugin '{plugin}'{where} implements {', '.join(hooks)}, the "
          f"old form that goes in slimcore {REMOVED_IN}; register the new one instead "
          f"({instead}; docs/plugins.md)", file=sys.stderr)


def ask(pm, hook: str, **kwargs) -> Any:
    """The old hook's first answer, as its firstresult call gives it (None when no plugin
    implements it, or none answers); the plugin that answered is told it is deprecated. A
    `run` of None is made from `config` and `tokenizer`: the old hooks took a Run."""
    impls = getattr(pm.hook, hook).get_hookimpls()
    if not impls:
        return None
    config, tokenizer = kwargs.pop("config", None), kwargs.pop("tokenizer", None)
    if "run" in kwargs and kwargs["run"] is None:
        kwargs["run"] = stand_in_run(config, tokenizer)
    for impl in reversed(impls):  # pluggy's order: last registered first
        answer = impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
        if answer is not None:
            warn_deprecated(pm, impl.plugin_name)
            return answer
    return None


def stand_in_run(config, tokenizer=None, output_dir: Path | None = None,
                 run_id: str | None = None) -> Run:
    """The Run an old hook is handed outside training (its folder, id, config, tokenizer)."""
    import torch

    from ..config.parse import parse_config
    from ..contracts.run import Run

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
