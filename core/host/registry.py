"""The one registry of named roles: every data source, checkpointer, export format, chart,
optimizer and schedule that the loaded plugins offer, each registered as a named object of
its role's contract type through the role's collection hook, and looked up by name, never
guarded.

    registry = Registry.collect(plugin_manager)
    registry.lookup(DATA_SOURCE, "chunk")        the class; UserError if unknown or ambiguous
    registry.names(CHECKPOINTER)                 what is installed, for messages
    registry.charts()                            every chart, in dashboard order

A name offered twice (by two plugins, or by a plugin that took a shipped plugin's name) is
ambiguous: looking it up is one line naming both offers, and `slimcore plugins --check` fails.
A plugin whose collection hook raises, or returns something that is not its role's type,
loses only its own offers of that role, with one warning naming it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from ..contracts.charts import Chart
from ..contracts.checkpointer import Checkpointer, ExportFormat
from ..contracts.errors import UserError, describe_error
from ..contracts.optimizer import OptimizerBuilder, Schedule
from ..contracts.source import DataSource
from ..config.suggest import suggest


@dataclass(frozen=True)
class Role:
    title: str  # "data source"
    hook: str  # the collection hook that offers it
    contract: type  # what every offer is (an instance of, or for `classes` a subclass of)
    key: str  # the setting that selects one, for messages
    classes: bool = False  # offered as classes: each run makes an object of its own

    @property
    def plural(self) -> str:
        return self.title + "s"

    def accepts(self, value: Any) -> bool:
        if self.classes:
            return isinstance(value, type) and issubclass(value, self.contract)
        return isinstance(value, self.contract)


DATA_SOURCE = Role("data source", "register_data_sources", DataSource, "data.source",
                   classes=True)
CHECKPOINTER = Role("checkpointer", "register_checkpointers", Checkpointer,
                    "checkpoint.checkpointer")
EXPORT_FORMAT = Role("export format", "register_export_formats", ExportFormat, "--format")
CHART = Role("chart", "register_charts", Chart, "charts")
OPTIMIZER = Role("optimizer", "register_optimizers", OptimizerBuilder, "optimizer.name")
SCHEDULE = Role("schedule", "register_schedules", Schedule, "schedule.kind")
ROLES = (DATA_SOURCE, CHECKPOINTER, EXPORT_FORMAT, CHART, OPTIMIZER, SCHEDULE)


@dataclass(frozen=True)
class Offer:
    role: Role
    name: str
    value: Any  # the registered object (a class, for a role of classes)
    plugin: str  # the plugin that offered it
    distribution: str  # that plugin's distribution and version, or "" in process
    legacy: bool = False  # an adapter of the old selection hooks (host/legacy.py)

    def describe(self) -> str:
        return f"'{self.plugin}'" + (f" ({self.distribution})" if self.distribution else "")


class Registry:
    def __init__(self, offers: list[Offer], problems: list[str]):
        self.offers = offers  # in the order plugins were asked
        self.problems = problems  # what `plugins --check` reports beside collisions

    @classmethod
    def collect(cls, pm, more: list[Offer] = ()) -> Registry:
        """Ask every loaded plugin's collection hooks, role by role, last registered first
        (pluggy's calling order); `more` are offers made otherwise (the old hook forms')."""
        offers, problems = [], []
        for role in ROLES:
            impls = getattr(pm.hook, role.hook).get_hookimpls()
            if pm.tracing:
                print(f"[slimcore trace] {role.hook}() -> {[i.plugin_name for i in impls]}",
                      file=sys.stderr)
            for impl in reversed(impls):
                offers += _offers_of(pm, role, impl, problems)
        return cls(offers + list(more), problems)

    # -- questions ----------------------------------------------------------------------------

    def names(self, role: Role) -> list[str]:
        return sorted({offer.name for offer in self.offers if offer.role is role})

    def offers_of(self, role: Role, name: str) -> list[Offer]:
        return [offer for offer in self.offers if offer.role is role and offer.name == name]

    def lookup(self, role: Role, name: str, key: str | None = None) -> Any:
        """The object offered as `name`; UserError naming `key` when none or two are."""
        found = self.offers_of(role, name)
        if len(found) > 1:
            raise UserError(f"{key or role.key}: {self.collision(role, name)}")
        if not found:
            raise self.unknown(role, name, key)
        return found[0].value

    def unknown(self, role: Role, name: str, key: str | None = None) -> UserError:
        installed = self.names(role)
        return UserError(f"{key or role.key}: unknown {role.title} '{name}'"
                         f"{suggest(name, installed)} (installed: "
                         f"{', '.join(installed) or 'none'}; see `slimcore plugins`)")

    def collision(self, role: Role, name: str) -> str:
        first, second, *_ = self.offers_of(role, name)
        return (f"{role.title} '{name}' is registered by both {first.describe()} and "
                f"{second.describe()}; give one of them another {role.contract.__name__} "
                f"name, or turn one plugin off (plugins.disable: [{second.plugin}])")

    def collisions(self) -> list[str]:
        names = {(offer.role, offer.name) for offer in self.offers}
        return [self.collision(role, name) for role, name in sorted(
            names, key=lambda n: (n[0].title, n[1])) if len(self.offers_of(role, name)) > 1]

    def charts(self) -> list[Chart]:
        """Every chart, in dashboard order (`order`, then name); a name offered twice is a
        UserError (the dashboard cannot tell which one a run means)."""
        offers = [offer for offer in self.offers if offer.role is CHART]
        for offer in offers:
            if len(self.offers_of(CHART, offer.name)) > 1:
                raise UserError(self.collision(CHART, offer.name))
        return sorted((offer.value for offer in offers), key=lambda c: (c.order, c.name))


def _offers_of(pm, role: Role, impl, problems: list[str]) -> list[Offer]:
    """What one plugin's collection hook offers; a hook that raises, or offers something of
    another type or without a name, loses that plugin its offers of this role, named."""
    plugin = impl.plugin_name
    info = pm.infos.get(plugin)
    distribution = f"{info.distribution} {info.version}" \
        if info is not None and info.version != "-" else ""
    try:
        values = list(impl.function() or [])
    except Exception as e:  # noqa: BLE001 - one plugin's failure must not hide the others'
        return _refused(problems, f"plugin '{plugin}' failed in {role.hook}: "
                                  f"{describe_error(e)}; its {role.plural} are left out")
    offers = []
    for value in values:
        if not role.accepts(value) or not getattr(value, "name", ""):
            what = f"a subclass of slimcore.{role.contract.__name__}" if role.classes else \
                f"a slimcore.{role.contract.__name__}"
            return _refused(problems, f"plugin '{plugin}' registered {value!r:.80} in "
                                      f"{role.hook}, which is not {what} with a name; its "
                                      f"{role.plural} are left out")
        if role is CHART:
            value.plugin = plugin  # the dashboard's render process loads only charts' owners
        offers.append(Offer(role, value.name, value, plugin, distribution))
    return offers


def _refused(problems: list[str], message: str) -> list[Offer]:
    problems.append(message)
    print(f"slimcore: warning: {message}", file=sys.stderr)
    return []
