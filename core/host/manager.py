"""Plugin discovery and calling: entry points of group `slimcore`, loaded one by one.

pluggy's own `load_setuptools_entrypoints` stops at the first plugin that fails to import;
slimcore loops over the entry points itself so that a broken plugin is reported with its
name, version and error and never takes the CLI down. A failure is fatal only when the run
selects that plugin (or with `--strict-plugins`).

Plugins are turned off before they are imported, from three places that add up:
YAML `plugins.disable`, CLI `-p no:NAME`, env `SLIMCORE_DISABLE_PLUGINS=a,b`. The env
`SLIMCORE_LOAD_PLUGINS=a,b` is an allowlist: every other installed plugin is blocked.
`SLIMCORE_TRACE_PLUGINS=1` prints every hook call with its arguments and result;
`SLIMCORE_TRACEBACK=1` prints the traceback of every plugin failure (load, hook, chart).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import pluggy
from pluggy._hooks import varnames

from ..host import builtins as builtin_plugins
from ..host import hookspecs
from ..config.schema import suggest
from ..contracts.errors import UserError, describe_error

ENTRY_POINT_GROUP = "slimcore"
FAILURES_BEFORE_SWITCH_OFF = 3
# Observer hooks in which a plugin may refuse the run with a UserError: nothing has been
# trained yet, so stopping loses nothing.
REFUSING_HOOKS = {"on_run_start"}


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str
    status: str  # loaded, blocked, failed
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class PluginFailure(UserError):
    """A plugin the run needs could not be loaded."""


class HookError(UserError):
    """A plugin implements a hook that does not exist, or takes an argument it is not
    given."""


class SlimcorePluginManager(pluggy.PluginManager):
    def __init__(self):
        super().__init__("slimcore")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._observer_failures: dict[str, int] = {}
        self.switched_off: set[str] = set()
        # Observer hooks run on rank 0 only: outputs (charts, JSON, the console) are written
        # once per job. execute_run sets this to False on the other ranks.
        self.observing = True
        self.tracing = bool(os.environ.get("SLIMCORE_TRACE_PLUGINS"))
        if self.tracing:
            self.enable_tracing()

    # -- discovery ----------------------------------------------------------------------

    def discover(self, disabled: set[str] = frozenset(), strict: bool = False,
                 only: set[str] | None = None) -> None:
        """Register the built-ins, then every installed entry point not disabled (and, with
        `only`, named there: a helper process loads just the plugins it needs)."""
        disabled = set(disabled) | env_list("SLIMCORE_DISABLE_PLUGINS")
        allow = env_list("SLIMCORE_LOAD_PLUGINS") | set(only or ())
        for name, factory in builtin_plugins.BUILTINS:
            # The allowlist names installed plugins; built-ins answer to disabling only.
            self._admit(name, "slimcore", _version("slimcore"), disabled, set(), factory)
        seen = set(self.infos)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen:
                continue  # the same distribution can be visible twice on sys.path
            seen.add(ep.name)
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            self._admit(ep.name, dist, version, disabled, allow, ep.load)
        if strict:
            failed = [i for i in self.infos.values() if i.status == "failed"]
            if failed:
                raise PluginFailure("; ".join(f"plugin '{i.name}' failed: {i.error}"
                                              for i in failed) + " (--strict-plugins)")

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
        specs = {name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name),
                                                             "slimcore_spec")}
        for attr in dir(plugin):
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            hook_name = opts.get("specname") or attr
            if hook_name not in specs:
                raise HookError(f"unknown hook '{hook_name}'{suggest(hook_name, specs)} "
                                "(the hooks: docs/plugins.md)")
            allowed = varnames(getattr(hookspecs, hook_name))[0]
            for arg in varnames(getattr(plugin, attr))[0]:
                if arg not in allowed:
                    raise HookError(f"hook '{hook_name}' has no argument '{arg}'"
                                    f"{suggest(arg, allowed)}; it takes {', '.join(allowed)}")

    def register_in_process(self, plugin: Any, name: str) -> None:
        """Register a plugin object of this process (tests, benchmarks) and list it like the
        installed ones. It may take the place of an installed plugin of its name that
        discovery blocked."""
        self._check_hooks(plugin)
        if self.is_blocked(name):
            self.unblock(name)
        self.register(plugin, name=name)
        self.infos[name] = PluginInfo(
            name=name, version="-", distribution="(in process)", status="loaded",
            hooks=sorted(c.name for c in self.get_hookcallers(plugin) or []))

    # -- questions the run asks ---------------------------------------------------------

    def check_selectable(self, name: str, role: str, key: str) -> None:
        """Fail with one clear line unless plugin `name` is loaded and plays `role`.

        Called before the run does any work, so a bad selection costs seconds, not a run.
        """
        info = self.infos.get(name)
        if info is not None and info.status == "blocked":
            raise UserError(f"{key}: {role} '{name}' is disabled (plugins.disable, -p no:"
                            f"{name} or SLIMCORE_*_PLUGINS); enable it or pick another")
        if info is not None and info.status == "failed":
            raise PluginFailure(f"{key}: {role} '{name}' ({info.distribution} {info.version}) "
                                f"failed to load: {info.error}")
        if name not in self.implementers(_ROLE_HOOKS[role]):
            raise self.unknown_selection(name, role, key)

    def unknown_selection(self, name: str, role: str, key: str) -> UserError:
        implementers = self.implementers(_ROLE_HOOKS[role])
        return UserError(f"{key}: unknown {role} '{name}'{suggest(name, implementers)} "
                         f"(installed: {', '.join(implementers) or 'none'}; "
                         "see `slimcore plugins`)")

    def implementers(self, hook_name: str) -> list[str]:
        caller = getattr(self.hook, hook_name)
        return sorted({impl.plugin_name for impl in caller.get_hookimpls()})

    def chart_owners(self) -> dict[str, str]:
        """{chart name: the plugin that registers it}."""
        return {chart.name: impl.plugin_name
                for impl in self.hook.register_charts.get_hookimpls()
                for chart in impl.function() or []}

    def charts(self) -> list:
        """Every chart that plugins register, in dashboard order; names are unique."""
        from ..contracts.charts import Chart

        charts, owners = [], {}
        for impl in reversed(self.hook.register_charts.get_hookimpls()):
            for chart in impl.function() or []:
                if not isinstance(chart, Chart) or not chart.name:
                    raise UserError(f"plugin '{impl.plugin_name}' registered {chart!r}, which is "
                                    "not a slimcore.Chart with a name")
                if chart.name in owners:
                    raise UserError(f"chart '{chart.name}' is registered by both "
                                    f"'{owners[chart.name]}' and '{impl.plugin_name}'; give "
                                    "one of them another Chart name, or turn one plugin off "
                                    f"(plugins.disable: [{impl.plugin_name}])")
                owners[chart.name] = impl.plugin_name
                charts.append(chart)
        return sorted(charts, key=lambda chart: (chart.order, chart.name))

    def header(self) -> str:
        """The one-line plugin summary printed at the start of a run, by distribution:
        `plugins: slimcore-datasources 0.1.0 (chunk, sample), ...; failed: broken`."""
        groups: dict[tuple[str, str], list[str]] = {}
        for info in self.infos.values():
            if info.status == "loaded" and info.distribution != "slimcore":
                groups.setdefault((info.distribution, info.version), []).append(info.name)
        line = "plugins: " + (", ".join(f"{dist} {version} ({', '.join(sorted(names))})"
                                        for (dist, version), names in groups.items()) or "none")
        blocked = [i.name for i in self.infos.values() if i.status == "blocked"]
        if blocked:
            line += "; blocked: " + ", ".join(blocked)
        failed = [f"{i.name} ({i.error})" for i in self.infos.values() if i.status == "failed"]
        if failed:
            line += "; failed: " + ", ".join(failed)
        return line

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
            if impl.plugin_name in self.switched_off:
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


_ROLE_HOOKS = {"data source": "iterate_batches", "checkpointer": "save_checkpoint",
               "export format": "export_model"}


def env_list(variable: str) -> set[str]:
    return {name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"
