"""Plugin discovery and calling: entry points of group `slimcore`, loaded one by one.

pluggy's own `load_setuptools_entrypoints` stops at the first plugin that fails to import;
slimcore loops over the entry points itself so that a broken plugin is reported with its
name, version and error and never takes the CLI down. A failure is fatal only when the run
selects that plugin (or with `--strict-plugins`). A plugin is broken, too, when it misspells a
hook or an argument, declares a config section that is not a dataclass, cannot be made from
its defaults or is another's, or a flag another has; and an entry point whose name another
distribution already uses is ambiguous: a run that needs that name stops, naming both.

Plugins are turned off before they are imported, from three places that add up:
YAML `plugins.disable`, CLI `-p no:NAME`, env `SLIMCORE_DISABLE_PLUGINS=a,b`. The env
`SLIMCORE_LOAD_PLUGINS=a,b` is an allowlist: every other installed plugin is blocked.
`SLIMCORE_TRACE_PLUGINS=1` prints every hook call with its arguments and result;
`SLIMCORE_TRACEBACK=1` prints the traceback of every plugin failure (load, hook, chart).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import pluggy
from pluggy._hooks import varnames

from ..config.flags import CORE_FLAGS
from ..config.schema import CORE_SECTIONS
from ..config.suggest import suggest
from ..contracts.errors import UserError, describe_error
from . import hookspecs
from .builtins import BUILTINS
from .legacy import legacy_offers, warn_deprecated
from .registry import CHART, ROLES, Registry

ENTRY_POINT_GROUP = "slimcore"
FAILURES_BEFORE_SWITCH_OFF = 3
# Observer hooks in which a plugin may refuse the run with a UserError: nothing has been
# trained yet, so stopping loses nothing.
REFUSING_HOOKS = {"on_run_start"}
HOOK_NAMES = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name),
                                                         "slimcore_spec")}


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str
    status: str  # loaded, blocked, failed
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    off: str | None = None  # loaded but off for the run, and why ("wandb.enabled is false")

    def to_dict(self) -> dict:
        return asdict(self)


class PluginFailure(UserError):
    """A plugin the run needs could not be loaded."""


class HookError(UserError):
    """A plugin implements a hook that does not exist, takes an argument it is not given, or
    declares what it may not (a section, a flag)."""


class SlimcorePluginManager(pluggy.PluginManager):
    def __init__(self):
        super().__init__("slimcore")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.ambiguous: dict[str, str] = {}  # plugin name -> why (two distributions offer it)
        self.sections: dict[str, type] = {}  # config sections the loaded plugins declare
        self.flags: dict[str, tuple[str, str]] = dict(CORE_FLAGS)  # and command-line flags
        self._owners: dict[str, str] = {}  # section or flag -> the plugin that declared it
        self._registry: Registry | None = None
        self._observer_failures: dict[str, int] = {}
        self.observer_errors: list[tuple[str, str, BaseException]] = []  # first of each plugin
        self.deprecations_told: set[str] = set()  # plugins of the old hooks, warned once
        self.switched_off: set[str] = set()  # failed too often in observer hooks
        # Observer hooks run on rank 0 only: outputs (charts, JSON, the console) are written
        # once per job. The launch sets this to False on the other ranks.
        self.observing = True
        self.tracing = bool(os.environ.get("SLIMCORE_TRACE_PLUGINS"))
        if self.tracing:
            self.enable_tracing()

    # -- discovery ----------------------------------------------------------------------

    def discover(self, disabled: set[str] = frozenset(), strict: bool = False,
                 only: set[str] | None = None) -> None:
        """Register the built-ins, then every installed entry point not disabled (and, with
        `only`, named there: a helper process loads just the plugins it needs)."""
        disabled = set(disabled) | env_list(DISABLE_VARIABLE)
        allow = env_list("SLIMCORE_LOAD_PLUGINS") | set(only or ())
        for name, factory in BUILTINS:
            # The allowlist names installed plugins; built-ins answer to disabling only.
            self._admit(name, "slimcore", _version("slimcore"), disabled, set(), factory)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            if ep.name in self.infos:
                self._name_taken(ep.name, dist, version)
                continue
            self._admit(ep.name, dist, version, disabled, allow, ep.load)
        if strict:
            failed = [i for i in self.infos.values() if i.status == "failed"]
            if failed:
                raise PluginFailure("; ".join(f"plugin '{i.name}' failed: {i.error}"
                                              for i in failed) + " (--strict-plugins)")

    def _name_taken(self, name: str, dist: str, version: str) -> None:
        """A second entry point of one name: the same distribution seen twice on sys.path is
        harmless; another distribution's makes the name ambiguous."""
        first = self.infos[name]
        if first.distribution == dist:
            return
        both = sorted([f"{first.distribution} {first.version}", f"{dist} {version}"])
        why = (f"plugin name '{name}' is offered by both {both[0]} and {both[1]}; uninstall "
               "one, or rename the entry point of the other (a plugin's name is its entry "
               "point's)")
        self.ambiguous[name] = why
        self.infos[f"{name} ({dist})"] = PluginInfo(name=name, version=version,
                                                    distribution=dist, status="failed",
                                                    error=why)
        self._registry = None

    def _admit(self, name: str, dist: str, version: str, disabled: set[str],
               allow: set[str], load: Callable[[], Any]) -> None:
        info = PluginInfo(name=name, version=version, distribution=dist, status="loaded")
        self.infos[name] = info
        if name in disabled or (allow and name not in allow):
            self.set_blocked(name)  # never imported
            info.status = "blocked"
            return
        try:
            plugin = load()
            if isinstance(plugin, type):
                plugin = plugin()  # a class: one fresh instance per plugin manager (per run)
            self._check_hooks(plugin)
            self.register(plugin, name=name)
            self._take_declarations(name)
        except Exception as e:  # noqa: BLE001 - any import-time failure is the plugin's
            if self.get_plugin(name) is not None:
                self.unregister(name=name)
            info.status = "failed"
            info.error = f"{type(e).__name__}: {e}"
            described = describe_error(e)
            if "\n" in described:  # SLIMCORE_TRACEBACK=1
                print(f"slimcore: plugin '{name}' failed to load: {described}", file=sys.stderr)
            return
        info.hooks = sorted(c.name for c in self.get_hookcallers(plugin) or [])

    def _check_hooks(self, plugin: Any) -> None:
        """A misspelled hook would silently never be called, and pluggy's own complaint
        about a misspelled argument spans three lines: one line each, with the fix."""
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            hook_name = opts.get("specname") or attr
            if hook_name not in HOOK_NAMES:
                raise HookError(f"unknown hook '{hook_name}'{suggest(hook_name, HOOK_NAMES)} "
                                "(the hooks: docs/plugins.md)")
            allowed = varnames(getattr(hookspecs, hook_name))[0]
            for arg in varnames(getattr(plugin, attr))[0]:
                if arg not in allowed:
                    raise HookError(f"hook '{hook_name}' has no argument '{arg}'"
                                    f"{suggest(arg, allowed)}; it takes {', '.join(allowed)}")

    def _take_declarations(self, name: str) -> None:
        """The config sections and flags plugin `name` declares, checked before they are
        kept: a section is a dataclass that can be made from its defaults, and no section
        or flag is another's."""
        sections, flags = {}, {}
        for impl in self.hook.declare_config.get_hookimpls():
            if impl.plugin_name == name:
                sections.update(impl.function() or {})
        for impl in self.hook.declare_flags.get_hookimpls():
            if impl.plugin_name == name:
                flags.update(impl.function() or {})
        for section, cls in sections.items():
            check_section(section, cls, self._owners.get(section))
        for flag in flags:
            if flag in self.flags or not str(flag).startswith("--"):
                raise HookError(f"declare_flags: the flag {flag!r} " + (
                    f"is {self._owners.get(flag, 'slimcore')}'s already" if flag in self.flags
                    else "does not start with --"))
        self.sections.update(sections)
        self.flags.update(flags)
        self._owners.update({key: name for key in (*sections, *flags)})

    def register_in_process(self, plugin: Any, name: str) -> None:
        """Register a plugin object of this process (tests, benchmarks) and list it like the
        installed ones. It may take the place of an installed plugin of its name that
        discovery blocked."""
        self._check_hooks(plugin)
        if self.is_blocked(name):
            self.unblock(name)
        self.register(plugin, name=name)
        try:
            self._take_declarations(name)
        except HookError:
            self.unregister(name=name)
            raise
        self.infos[name] = PluginInfo(
            name=name, version="-", distribution="(in process)", status="loaded",
            hooks=sorted(c.name for c in self.get_hookcallers(plugin) or []))

    def register(self, plugin, name=None):
        self._registry = None  # collected again when next asked
        return super().register(plugin, name)

    def unregister(self, plugin=None, name=None):
        self._registry = None
        return super().unregister(plugin, name)

    # -- questions the run asks ---------------------------------------------------------

    @property
    def registry(self) -> Registry:
        """Every named object the loaded plugins offer, collected once (registry.py)."""
        if self._registry is None:
            self._registry = Registry.collect(self, legacy_offers(self))
        return self._registry

    def section_problems(self) -> list[str]:
        """A line for each declared section that cannot be made from its defaults."""
        return [f"plugin '{self._owners[name]}': {problem}" for name, cls in self.sections.items()
                if (problem := default_problem(name, cls))]

    def unloaded(self) -> set[str]:
        """Names of plugins installed but not loaded: their config sections may stay in a
        YAML unread."""
        return {i.name for i in self.infos.values() if i.status != "loaded"}

    def lookup(self, role_title: str, name: str, key: str | None = None) -> Any:
        """The object of role `role_title` ("data source", "checkpointer", ...) registered
        as `name`, or one clear line: disabled, failed to load, ambiguous, unknown."""
        role = next(r for r in ROLES if r.title == role_title)
        key = key or role.key
        info = self.infos.get(name)
        if info is not None and info.status == "blocked":
            raise UserError(f"{key}: {role.title} '{name}' is disabled (plugins.disable, -p no:"
                            f"{name} or SLIMCORE_*_PLUGINS); enable it or pick another")
        if info is not None and info.status == "failed" and \
                name not in self.registry.names(role):
            raise PluginFailure(f"{key}: {role.title} '{name}' ({info.distribution} "
                                f"{info.version}) failed to load: {info.error}")
        offers = self.registry.offers_of(role, name)
        ambiguous = [self.ambiguous[o.plugin] for o in offers if o.plugin in self.ambiguous]
        if ambiguous:
            raise UserError(f"{key}: {ambiguous[0]}")
        found = self.registry.lookup(role, name, key)
        if offers[0].legacy:
            warn_deprecated(self, offers[0].plugin)
        return found

    def check_selectable(self, name: str, role_title: str, key: str) -> None:
        """Fail with one clear line unless `name` is a loaded plugin's `role_title`; called
        before the run does any work, so a bad selection costs seconds, not a run."""
        self.lookup(role_title, name, key)

    def unknown_selection(self, name: str, role_title: str, key: str) -> UserError:
        role = next(r for r in ROLES if r.title == role_title)
        return self.registry.unknown(role, name, key)

    def charts(self) -> list:
        """Every chart that plugins register, in dashboard order; names are unique, and no
        chart's plugin is ambiguous."""
        for offer in self.registry.offers:
            if offer.role is CHART and offer.plugin in self.ambiguous:
                raise UserError(f"dashboard: {self.ambiguous[offer.plugin]}")
        return self.registry.charts()

    def owner_of(self, section: str) -> str | None:
        """The plugin that declared config section (or flag) `section`."""
        return self._owners.get(section)

    def _is_off(self, plugin: str) -> bool:
        info = self.infos.get(plugin)
        return info is not None and info.off is not None

    def report(self) -> list[dict]:
        return [i.to_dict() for i in self.infos.values()]

    # -- observer calls, each plugin in isolation ----------------------------------------

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an observer hook on every plugin; a failing plugin does not stop the others.

        The first failure of a plugin is reported with its name; after
        FAILURES_BEFORE_SWITCH_OFF failures it is switched off for the rest of the run.
        Not called at all on ranks other than 0 (`observing`).
        """
        if not self.observing:
            return
        caller = getattr(self.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):  # pluggy's order: last registered first
            if impl.plugin_name in self.switched_off or self._is_off(impl.plugin_name):
                continue
            if self.tracing:
                print(f"[slimcore trace] {hook_name}({', '.join(kwargs)}) -> "
                      f"{impl.plugin_name}", file=sys.stderr)
            try:
                impl.function(**{arg: kwargs[arg] for arg in impl.argnames})
            except UserError:
                if hook_name in REFUSING_HOOKS:
                    raise  # the plugin refuses the run's settings before any step: exit 2
                self._observer_failed(impl.plugin_name, hook_name, sys.exc_info()[1])
            except Exception as e:  # noqa: BLE001 - an observer must never stop training
                self._observer_failed(impl.plugin_name, hook_name, e)

    def _observer_failed(self, plugin_name: str, hook_name: str, error: Exception) -> None:
        count = self._observer_failures.get(plugin_name, 0) + 1
        self._observer_failures[plugin_name] = count
        if count == 1:
            self.observer_errors.append((plugin_name, hook_name, error))
            print(f"slimcore: warning: plugin '{plugin_name}' failed in {hook_name}: "
                  f"{describe_error(error)}", file=sys.stderr)
        if count >= FAILURES_BEFORE_SWITCH_OFF:
            self.switched_off.add(plugin_name)
            info = self.infos.get(plugin_name)
            if info is not None:
                info.status = "failed"
                info.error = f"switched off after {count} failures in observer hooks"
            print(f"slimcore: warning: plugin '{plugin_name}' switched off after {count} "
                  "failures; training goes on", file=sys.stderr)

    # -- debugging ----------------------------------------------------------------------

    def enable_tracing(self) -> None:
        def before(hook_name, hook_impls, kwargs):
            names = [i.plugin_name for i in hook_impls]
            print(f"[slimcore trace] {hook_name}({', '.join(kwargs)}) -> {names}",
                  file=sys.stderr)

        def after(outcome, hook_name, hook_impls, kwargs):
            print(f"[slimcore trace] {hook_name} returned {outcome.get_result()!r:.120}",
                  file=sys.stderr)

        self.add_hookcall_monitoring(before, after)


def check_section(name: str, cls: Any, owner: str | None) -> None:
    """A declared config section the core can parse, and nobody else's."""
    if name in CORE_SECTIONS or owner is not None:
        raise HookError(f"declare_config: section '{name}' is "
                        + (f"plugin '{owner}''s" if owner else "a core section"))
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise HookError(f"declare_config: section '{name}' is {cls!r:.80}, not a dataclass")


def default_problem(name: str, cls: type) -> str | None:
    """Why section `name` cannot be made from its defaults (a run whose YAML leaves it out
    then stops), or None. `slimcore plugins --check` reports it."""
    try:
        cls()
    except Exception as e:  # noqa: BLE001 - the author's dataclass, whatever it raises
        return (f"config section '{name}' cannot be made from its defaults "
                f"({type(e).__name__}: {e}); give every field a valid default")
    return None


DISABLE_VARIABLE = "SLIMCORE_DISABLE_PLUGINS"  # names switched off in every command


def env_list(variable: str) -> set[str]:
    return {name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def installed_charts(plugins: set[str]) -> list:
    """The charts that the named installed plugins register, in dashboard order. Only those
    plugins are loaded: the dashboard's render process imports no torch, no data source."""
    manager = SlimcorePluginManager()
    manager.discover(only=plugins)
    return manager.charts()
