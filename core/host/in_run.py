"""Which of the loaded plugins a run uses: the ones its config switches off (`enabled:
false` in a plugin's own section), and the one `plugins:` line printed at its start.

    switch_off_idle(plugins, config.plugin_sections)   before the run: their hooks not called
    run_header(plugins, {DATA_SOURCE: "chunk", ...})   `plugins: slimcore-datasources 0.1.0
                                                        (chunk), ...; off: wandb`
"""

from __future__ import annotations

from typing import Any

from .manager import SlimcorePluginManager, default_problem
from .registry import CHART, Role


def switch_off_idle(plugins: SlimcorePluginManager, sections: dict[str, Any]) -> None:
    """A plugin whose own config section says `enabled: false` (the trackers, until a run
    turns them on) is off for the run: listed as off, its observer hooks never called.
    `sections` are the parsed plugin sections, by name."""
    for section, value in sections.items():
        owner = plugins.infos.get(plugins.owner_of(section) or "")
        if owner is not None and getattr(value, "enabled", True) is False:
            owner.off = f"{section}.enabled is false"


def switch_off_idle_by_default(plugins: SlimcorePluginManager) -> None:
    """As `switch_off_idle`, for the sections' defaults: what a run that sets nothing gets
    (`slimcore plugins`)."""
    switch_off_idle(plugins, {name: cls() for name, cls in plugins.sections.items()
                              if not default_problem(name, cls)})


def run_header(plugins: SlimcorePluginManager, selected: dict[Role, str]) -> str:
    """What the run uses, by distribution, then what is off, blocked or failed. A plugin is
    in the run when it offers the `selected` data source or checkpointer, or has hooks
    beyond declaring and registering (an observer that is on); charts are counted."""
    used = {offer.plugin for role, name in selected.items()
            for offer in plugins.registry.offers_of(role, name)}
    charts: dict[str, int] = {}
    for offer in plugins.registry.offers:
        if offer.role is CHART:
            charts[offer.plugin] = charts.get(offer.plugin, 0) + 1
    groups: dict[tuple[str, str], list[str]] = {}
    for info in plugins.infos.values():
        if info.status != "loaded" or info.off or info.distribution == "slimcore":
            continue
        runs = any(not hook.startswith(("declare_", "register_")) for hook in info.hooks)
        if info.name in used or runs or info.name in charts:
            groups.setdefault((info.distribution, info.version), []).append(info.name)
    parts = []
    for (dist, version), names in groups.items():
        count = sum(charts.get(name, 0) for name in names)
        shown = sorted(name for name in names if name not in charts or name in used)
        shown += [f"{count} chart{'s' if count != 1 else ''}"] if count else []
        parts.append(f"{dist} {version} ({', '.join(shown)})")
    line = "plugins: " + (", ".join(parts) or "none")
    infos = plugins.infos.values()
    for status, names in (("off", [i.name for i in infos if i.off]),
                          ("blocked", [i.name for i in infos if i.status == "blocked"]),
                          ("failed", [f"{i.name} ({i.error})" for i in infos
                                      if i.status == "failed"])):
        if names:
            line += f"; {status}: " + ", ".join(sorted(names))
    return line
