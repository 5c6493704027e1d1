"""`slimcore plugins [--json] [--check]`: every plugin with its version, distribution, status
and hooks, each registration hook with the names it offers (`register_optimizers (adamw,
muon)`; `offers` in --json), or why it failed, or is off until a run turns it on; `--check`
exits 1 when anything about the installed plugins is broken, for a plugin's CI.

What `--check` finds: a plugin that failed to load (an import error, a misspelled hook or
argument, a config section that is not a dataclass or is another's, a flag another has), two
distributions offering one plugin name, a config section that cannot be made from its
defaults, a registration hook that raised or offered something that is not its role's type,
and a name two plugins register for one role.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..host.in_run import switch_off_idle_by_default


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    plugins = sub.add_parser("plugins", parents=[common], help="list installed plugins")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--check", action="store_true",
                         help="exit 1 when a plugin is broken or clashes with another (for a "
                              "plugin's CI)")
    plugins.set_defaults(handler=command_plugins)


def command_plugins(args: argparse.Namespace) -> int:
    pm = args.plugin_manager
    switch_off_idle_by_default(pm)  # a run that sets nothing: the trackers are off
    report = pm.report()
    for plugin in report:  # what a YAML selects by name is not always the plugin's name
        plugin["offers"] = offers_of(pm, plugin["name"])
    print(json.dumps(report, indent=2) if args.json else table(report))
    if not args.check:
        return 0
    failed = [p for p in report if p["status"] == "failed"]
    problems = [f"plugin '{p['name']}' ({p['distribution']} {p['version']}): {p['error']}"
                for p in failed]
    problems += pm.section_problems() + pm.registry.problems + pm.registry.collisions()
    if failed:
        print(f"slimcore: {len(failed)} plugin(s) failed to load: "
              f"{', '.join(p['name'] for p in failed)} (SLIMCORE_TRACEBACK=1 shows why in "
              "full)", file=sys.stderr)
    for problem in problems:
        print(f"slimcore: {problem}", file=sys.stderr)
    return 1 if problems else 0


def offers_of(pm, plugin: str) -> dict[str, list[str]]:
    """{registration hook: the names `plugin` offers through it}."""
    offers: dict[str, list[str]] = {}
    for offer in pm.registry.offers:
        if offer.plugin == plugin and not offer.legacy:
            offers.setdefault(offer.role.hook, []).append(offer.name)
    return {hook: sorted(names) for hook, names in offers.items()}


def table(report: list[dict]) -> str:
    rows = [("NAME", "VERSION", "DISTRIBUTION", "STATUS", "HOOKS OR ERROR")]
    rows += [(p["name"], p["version"], p["distribution"], "off" if p["off"] else p["status"],
              p["off"] if p["off"] else hooks_of(p) if p["status"] == "loaded"
              else (p["error"] or "")) for p in report]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)) + "  " + row[4]
                     for row in rows)


def hooks_of(plugin: dict) -> str:
    """Its hooks, each registration hook with the names it offers unless they are just the
    plugin's own name."""
    said = []
    for hook in plugin["hooks"]:
        names = plugin["offers"].get(hook, [])
        said.append(f"{hook} ({', '.join(names)})" if names and names != [plugin["name"]]
                    else hook)
    return ", ".join(said)
