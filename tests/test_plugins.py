"""Discovery, disabling, failure isolation and the plugin listing, with real installed
plugin distributions (pip-installed by the `installed_plugins` fixture)."""

import json

import pytest
import yaml

from slimcore import hookimpl
from slimcore.contracts.errors import UserError
from slimcore.host.manager import FAILURES_BEFORE_SWITCH_OFF, SlimcorePluginManager


def listing(cli, *args, env=None):
    result = cli("plugins", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


def test_plugins_json_lists_sources_with_distribution_and_version(cli):
    plugins = listing(cli, "--check")  # exit status 0: every plugin loaded
    for name in ("sample", "chunk"):
        assert plugins[name]["distribution"] == "slimcore-datasources"
        assert plugins[name]["version"] == "0.1.0"
        assert plugins[name]["status"] == "loaded"
        assert "register_data_sources" in plugins[name]["hooks"]
    assert plugins["three_file"]["distribution"] == "slimcore-checkpointers"


def test_broken_plugin_is_listed_as_failed_and_breaks_nothing(cli, installed_plugins):
    plugins = listing(cli, env=installed_plugins)
    broken = plugins["broken"]
    assert broken["status"] == "failed"
    assert broken["distribution"] == "slimcore-broken-plugin" and broken["version"] == "0.0.7"
    assert "RuntimeError: this plugin is broken on purpose" in broken["error"]
    assert plugins["chunk"]["status"] == "loaded"
    text = cli("plugins", env=installed_plugins)
    assert text.returncode == 0
    header, *rows = text.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "DISTRIBUTION", "STATUS", "HOOKS", "OR", "ERROR"]
    # Aligned: every row's status starts in the header's STATUS column.
    column = header.index("STATUS")
    statuses = {row.split()[0]: row[column:].split()[0] for row in rows}
    assert statuses["broken"] == "failed" and statuses["chunk"] == "loaded"
    # --check: exit status 1 for an author's CI, naming the plugin; with SLIMCORE_TRACEBACK=1
    # the load failure's traceback too, down to the plugin's own line.
    traced = cli("plugins", "--check", env={**installed_plugins, "SLIMCORE_TRACEBACK": "1"})
    assert traced.returncode == 1 and "failed to load: broken" in traced.stderr
    assert "plugin 'broken' failed to load: RuntimeError" in traced.stderr
    assert "Traceback (most recent call last)" in traced.stderr
    assert 'raise RuntimeError("this plugin is broken on purpose")' in traced.stderr


def test_run_that_does_not_select_the_broken_plugin_succeeds(cli, write_config,
                                                             installed_plugins, tmp_path):
    result = cli("run", str(write_config({"run": {"steps": 2}})), env=installed_plugins)
    assert result.returncode == 0, result.stderr
    # The header says why it failed.
    assert "failed: broken (RuntimeError: this plugin is broken on purpose)" in \
        result.stdout.splitlines()[0]
    record = json.loads((tmp_path / "out" / "plugins.json").read_text())
    assert {p["name"]: p["status"] for p in record}["broken"] == "failed"


def test_run_that_selects_the_broken_plugin_stops_with_one_line(cli, write_config,
                                                                installed_plugins):
    result = cli("run", str(write_config({"data": {"source": "broken"}})), env=installed_plugins)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "slimcore: error: data.source: data source 'broken' (slimcore-broken-plugin 0.0.7) "
        "failed to load: RuntimeError: this plugin is broken on purpose"]


def test_strict_plugins_makes_any_failure_fatal(cli, installed_plugins):
    result = cli("plugins", "--strict-plugins", env=installed_plugins)
    assert result.returncode == 2 and "plugin 'broken' failed" in result.stderr


def test_third_party_data_source_found_through_its_entry_point(cli, write_config,
                                                               installed_plugins):
    config = write_config({"data": {"source": "counting"}, "run": {"steps": 3}})
    result = cli("run", str(config), env=installed_plugins)
    assert result.returncode == 0, result.stderr
    assert "slimcore-counting-source 0.0.7 (counting)" in result.stdout.splitlines()[0]


@pytest.mark.parametrize("how", ["yaml", "cli", "env"])
def test_disabled_plugin_is_never_imported(cli, write_config, installed_plugins, tmp_path, how):
    """Blocked before import: the broken plugin's import (which raises) never runs, so the
    run records it as blocked with no error."""
    env = dict(installed_plugins)
    updates = {"run": {"steps": 1}}
    args = []
    if how == "yaml":
        updates["plugins"] = {"disable": ["dashboard", "broken"]}
    elif how == "cli":
        args = ["-p", "no:broken"]
    else:
        env["SLIMCORE_DISABLE_PLUGINS"] = "broken, sample"
    result = cli("run", str(write_config(updates)), *args, env=env)
    assert result.returncode == 0, result.stderr
    record = {p["name"]: p for p in json.loads((tmp_path / "out" / "plugins.json").read_text())}
    assert record["broken"]["status"] == "blocked" and record["broken"]["error"] is None
    assert "blocked: " in result.stdout.splitlines()[0]


def test_allowlist_blocks_everything_else(cli):
    plugins = listing(cli, env={"SLIMCORE_LOAD_PLUGINS": "chunk"})
    assert plugins["chunk"]["status"] == "loaded"
    assert plugins["sample"]["status"] == "blocked"
    assert plugins["progress"]["status"] == "loaded"  # built-ins answer to disabling only


def test_disabled_plugin_section_in_yaml_is_tolerated(cli, write_config):
    # The YAML configures `chunk:`; with the chunk plugin off, that section is not an error.
    result = cli("config", str(write_config({"data": {"source": "sample"}})), "-p", "no:chunk")
    assert result.returncode == 0, result.stderr
    assert "chunk" not in yaml.safe_load(result.stdout)


def test_misspelled_hook_is_a_load_failure():
    class Typo:
        @hookimpl
        def on_metric(self, metrics):  # not a hook: would silently never be called
            pass

    pm = SlimcorePluginManager()
    with pytest.raises(Exception, match="unknown hook 'on_metric'"):
        pm.register_in_process(Typo(), "typo")


def test_tracing_prints_hook_calls(cli, write_config):
    result = cli("run", str(write_config({"run": {"steps": 1}})),
                 env={"SLIMCORE_TRACE_PLUGINS": "1"})
    assert result.returncode == 0, result.stderr
    assert ("[slimcore trace] register_data_sources() -> ['chunk', 'sample', 'tokens']"
            in result.stderr)
    assert "[slimcore trace] on_metrics(run, metrics) -> json_export" in result.stderr
    assert "[slimcore trace]" not in cli("config", str(write_config())).stderr


def test_failing_observer_is_reported_once_then_switched_off(capsys):
    calls = []

    class Flaky:
        @hookimpl
        def on_metrics(self, metrics):
            calls.append(metrics)
            raise ValueError("chart exploded")

    class Healthy:
        seen = 0

        @hookimpl
        def on_metrics(self, metrics):
            Healthy.seen += 1

    pm = SlimcorePluginManager()
    pm.register_in_process(Flaky(), "flaky")
    pm.register_in_process(Healthy(), "healthy")
    for step in range(FAILURES_BEFORE_SWITCH_OFF + 3):
        pm.notify("on_metrics", metrics=step, run=None)
    err = capsys.readouterr().err
    assert err.count("plugin 'flaky' failed in on_metrics: ValueError: chart exploded") == 1
    assert "plugin 'flaky' switched off" in err
    assert len(calls) == FAILURES_BEFORE_SWITCH_OFF
    assert Healthy.seen == FAILURES_BEFORE_SWITCH_OFF + 3
    assert pm.infos["flaky"].status == "failed"


def test_unknown_selection_lists_what_is_installed():
    pm = SlimcorePluginManager()
    pm.discover()
    error = pm.unknown_selection("nowhere", "data source", "data.source")
    assert isinstance(error, UserError)
    assert "installed: chunk, sample" in str(error)


def test_shipped_plugins_use_the_public_api_alone():
    """What a third party can import is what the shipped plugins import: `slimcore` and its
    exported names (core/__init__.py), never a module behind it."""
    import ast

    import slimcore
    from conftest import REPO

    sources = sorted((REPO / "plugins").glob("*/slimcore_*/*.py")) + sorted(
        (REPO / "examples").glob("*/slimcore_*/*.py"))
    assert len(sources) > 10
    offenders = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("slimcore."):
                    offenders.append(f"{path.relative_to(REPO)}: from {node.module} import ...")
                elif node.module == "slimcore":
                    offenders += [f"{path.relative_to(REPO)}: {alias.name} is not exported"
                                  for alias in node.names if alias.name not in slimcore.__all__]
            elif isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(REPO)}: import {alias.name}"
                              for alias in node.names if alias.name.startswith("slimcore.")]
    assert offenders == []


def test_a_misspelled_hook_or_argument_is_one_line_with_the_fix():
    class MisspelledHook:
        @hookimpl
        def on_metric(self, metrics):
            pass

    class MisspelledArgument:
        @hookimpl
        def on_metrics(self, metric, run):
            pass

    pm = SlimcorePluginManager()
    with pytest.raises(UserError) as hook:
        pm.register_in_process(MisspelledHook(), "a")
    assert str(hook.value) == ("unknown hook 'on_metric' (did you mean 'on_metrics'?) (the "
                               "hooks: docs/plugins.md)")
    with pytest.raises(UserError) as argument:
        pm.register_in_process(MisspelledArgument(), "b")
    assert str(argument.value) == ("hook 'on_metrics' has no argument 'metric' (did you mean "
                                   "'metrics'?); it takes metrics, run")
    assert pm.get_plugin("a") is None and pm.get_plugin("b") is None


def test_unknown_plugin_and_source_names_get_a_suggestion(cli, write_config):
    result = cli("plugins", "-p", "no:dashbord")
    assert result.returncode == 2
    assert "no plugin named 'dashbord' is installed (did you mean 'dashboard'?)" in result.stderr
    result = cli("run", str(write_config({"data": {"source": "chunks"}})))
    assert result.returncode == 2
    assert "unknown data source 'chunks' (did you mean 'chunk'?)" in result.stderr
    # The environment's list too (a typo there switched nothing off, silently).
    result = cli("plugins", env={"SLIMCORE_DISABLE_PLUGINS": "sample,dashbord"})
    assert result.returncode == 2 and result.stderr.startswith(
        "slimcore: error: SLIMCORE_DISABLE_PLUGINS: no plugin named 'dashbord' is installed "
        "(did you mean 'dashboard'?)")


def test_a_plugin_failure_shows_its_traceback_with_slimcore_traceback(capsys, monkeypatch):
    class Failing:
        @hookimpl
        def on_run_start(self, run):
            raise RuntimeError("boom in on_run_start")

    pm = SlimcorePluginManager()
    pm.register_in_process(Failing(), "failing")
    pm.notify("on_run_start", run=None)
    assert capsys.readouterr().err.strip() == ("slimcore: warning: plugin 'failing' failed in "
                                               "on_run_start: RuntimeError: boom in on_run_start")
    monkeypatch.setenv("SLIMCORE_TRACEBACK", "1")
    pm = SlimcorePluginManager()
    pm.register_in_process(Failing(), "failing")
    pm.notify("on_run_start", run=None)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and 'raise RuntimeError("boom' in err
