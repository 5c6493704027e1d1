"""What a plugin author meets, tried as a new author would: each finding of a review that
wrote three plugins from docs/ alone, held by a test. Plugins are real distributions
pip-installed into a folder of the test's own where the finding is about installing them."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from conftest import pip_install, run_cli, run_in_process
from slimcore import Batch, Chart, DataSource, UserError, hookimpl
from slimcore.host.manager import HookError, SlimcorePluginManager


def install(tmp_path, distribution: str, entry_point: str, code: str) -> dict:
    """pip-install a one-module plugin distribution into tmp_path/site; the env that sees it."""
    module = distribution.replace("-", "_")
    return pip_install({distribution: (distribution, entry_point, module, code)},
                       tmp_path / "src", tmp_path / "site", version="0.0.1")


def offering(hook: str, *objects):
    """An in-process plugin whose hook `hook` returns `objects`."""
    return type("Offering", (), {hook: hookimpl(lambda self: list(objects))})()


ANOTHER_CHUNK = """
    import torch
    from slimcore import Batch, DataSource, hookimpl

    class Chunk(DataSource):
        name = "chunk"

        def __next__(self):
            return Batch.from_sequences(torch.zeros(2, 9, dtype=torch.long))

    @hookimpl
    def register_data_sources():
        return [Chunk]
    """


def test_a_plugin_named_like_a_shipped_one_is_ambiguous_not_a_silent_swap(tmp_path,
                                                                          write_config):
    env = install(tmp_path, "slimcore-chunk", "chunk", ANOTHER_CHUNK)
    check = run_cli("plugins", "--check", env=env)
    assert check.returncode == 1
    assert ("plugin name 'chunk' is offered by both slimcore-chunk 0.0.1 and "
            "slimcore-datasources 0.1.0") in check.stderr
    run = run_cli("run", str(write_config({"run": {"steps": 1}})), env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        "slimcore: error: data.source: plugin name 'chunk' is offered by both")
    # new-plugin refuses the name up front
    made = run_cli("new-plugin", "source", "chunk", "--output", str(tmp_path / "new"))
    assert made.returncode == 2 and "'chunk' is the name of an installed plugin" in made.stderr
    assert not (tmp_path / "new").exists()


def test_a_chart_named_like_another_plugins_chart_fails_the_check_naming_both():
    mine = type("Loss", (Chart,), {"name": "loss", "title": "Mine"})()
    pm = SlimcorePluginManager()
    pm.discover()
    pm.register_in_process(offering("register_charts", mine), "my_charts")
    assert pm.registry.collisions() == [
        "chart 'loss' is registered by both 'my_charts' and 'loss' (slimcore-visualizers "
        "0.1.0); give one of them another Chart name, or turn one plugin off "
        "(plugins.disable: [loss])"]
    with pytest.raises(UserError, match="chart 'loss' is registered by both"):
        pm.charts()


def test_a_raising_register_charts_loses_only_its_own_charts_named(capsys):
    class Broken:
        @hookimpl
        def register_charts(self):
            raise RuntimeError("no charts today")

    fine = type("Fine", (Chart,), {"name": "fine", "title": "Fine"})()
    pm = SlimcorePluginManager()
    pm.register_in_process(Broken(), "broken_charts")
    pm.register_in_process(offering("register_charts", fine), "good_charts")
    assert [c.name for c in pm.charts()] == ["fine"]
    err = capsys.readouterr().err
    assert ("plugin 'broken_charts' failed in register_charts: RuntimeError: no charts "
            "today; its charts are left out") in err
    assert "dashboard" not in err
    assert pm.registry.problems  # and `plugins --check` reports it


@dataclass
class NoDefault:
    every: int  # no default: a run would fail to make it


@pytest.mark.parametrize("declared, says", [
    ({"notes": dict}, "section 'notes' is <class 'dict'>, not a dataclass"),
    ({"corpus": NoDefault}, "section 'corpus' is plugin 'corpus''s"),
    ({"model": NoDefault}, "section 'model' is a core section"),
])
def test_a_section_the_core_cannot_use_is_a_plugin_failure_at_once(declared, says):
    plugin = type("Plugin", (), {"declare_config": hookimpl(lambda self: declared)})()
    pm = SlimcorePluginManager()
    pm.discover()
    with pytest.raises(HookError, match=says.replace("(", r"\(").replace(")", r"\)")):
        pm.register_in_process(plugin, "notes")
    assert pm.get_plugin("notes") is None


def test_a_section_without_defaults_is_a_check_problem():
    plugin = type("Plugin", (), {"declare_config": hookimpl(lambda self: {"notes": NoDefault})})
    pm = SlimcorePluginManager()
    pm.register_in_process(plugin(), "notes")
    assert pm.section_problems() == [
        "plugin 'notes': config section 'notes' cannot be made from its defaults (TypeError: "
        "NoDefault.__init__() missing 1 required positional argument: 'every'); give every "
        "field a valid default"]


def test_plugins_check_fails_for_a_section_that_is_not_a_dataclass(tmp_path):
    env = install(tmp_path, "slimcore-notes", "notes", """
        from slimcore import hookimpl

        @hookimpl
        def declare_config():
            return {"notes": dict}
        """)
    check = run_cli("plugins", "--check", env=env)
    assert check.returncode == 1 and "failed to load: notes" in check.stderr
    listed = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    assert "not a dataclass" in listed["notes"]["error"]


class Scripted(DataSource):
    """A source whose batches or position break the contract, as `broken` says."""

    name, resumable = "scripted", True
    broken = "nothing"

    def __next__(self):
        rows = torch.arange(4 * 33).view(4, 33) % 50
        if self.broken == "shape":
            rows = torch.zeros(4, 70, dtype=torch.long)
        if self.broken == "dtype":
            rows = rows.int()
        if self.broken == "ids":
            rows[1, 5] = 10**6
        return Batch.from_sequences(rows)

    def state_dict(self):
        return {"drawn": np.int64(3)} if self.broken == "position" else {"drawn": 3}

    def load_state_dict(self, state):
        pass

    @classmethod
    def corpus_text(cls, config, max_documents):
        return ["some words for a tokenizer to learn from"] * 40


class ScriptedPlugin:
    def __init__(self, broken):
        self.source = type("Broken", (Scripted,), {"broken": broken})

    @hookimpl
    def register_data_sources(self):
        return [self.source]


@pytest.mark.parametrize("broken, says", [
    ("shape", "data source 'scripted': batch 1 has rows of shape (4, 69), and model.seq_len "
              "is 32"),
    ("dtype", "data source 'scripted': batch 1 has inputs of torch.int32"),
    ("ids", "data source 'scripted': batch 1 has inputs id 1000000, outside the tokenizer's "
            "vocabulary"),
    ("position", "data source 'scripted': its state_dict()['drawn'] holds numpy.int64"),
])
def test_a_source_that_breaks_its_contract_is_named_at_its_first_step(broken, says,
                                                                      write_config, tmp_path):
    config = write_config({"data": {"source": "scripted"}, "tokenizer": {"vocab_size": 300},
                           "run": {"steps": 3}, "intervals": {"checkpoint": 1}})
    with pytest.raises(UserError) as error:
        run_in_process(config, {"scripted": ScriptedPlugin(broken)})
    assert says in str(error.value)
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing half-saved


def test_tiny_run_raises_what_a_failing_observer_raised(tmp_path):
    from slimcore.testing import tiny_run

    class Failing:
        @hookimpl
        def on_metrics(self, metrics):
            raise ZeroDivisionError("my plugin's bug")

    with pytest.raises(ZeroDivisionError, match="my plugin's bug"):
        tiny_run(tmp_path / "run", plugins={"failing": Failing()}, steps=2)
    result = tiny_run(tmp_path / "again", plugins={"failing": Failing()}, steps=2,
                      allow_failures=True)
    assert result.failures == ["plugin 'failing' failed in on_metrics: ZeroDivisionError: "
                               "my plugin's bug"]


def test_moved_keys_are_read_in_their_new_place_with_one_line_each(write_config, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(9)))
    config = write_config(text=f"""
        data:
          path: {corpus}
        intervals:
          viz: 7
          sample_every: 2
        """)
    done = run_cli("config", str(config))
    assert done.returncode == 0, done.stderr
    resolved = __import__("yaml").safe_load(done.stdout)
    assert resolved["corpus"]["path"] == str(corpus)
    assert resolved["dashboard"]["every"] == resolved["json_export"]["every"] == 7
    assert resolved["samples"]["every"] == 14  # 2 viz intervals of 7 steps
    warnings = [line for line in done.stderr.splitlines() if "is now" in line]
    assert sorted(w.split(": ", 3)[3] for w in warnings) == [
        "data.path is now corpus.path; read as such (the old key goes in slimcore 0.3)",
        "intervals.sample_every is now samples.every; read as such (the old key goes in "
        "slimcore 0.3)",
        "intervals.viz is now dashboard.every and json_export.every; read as such (the old "
        "key goes in slimcore 0.3)"]
    # A bad value is blamed on the key the user wrote.
    bad = run_cli("config", str(config), "--set", "intervals.viz=0")
    assert bad.returncode == 2 and "intervals.viz" in bad.stderr.splitlines()[-1]


def test_a_plugin_of_the_old_hook_form_runs_with_one_deprecation_warning(write_config,
                                                                         installed_plugins):
    """The counting source of conftest is written to the hooks of slimcore 0.1
    (iterate_batches, corpus_text), pip-installed."""
    done = run_cli("run", str(write_config({"data": {"source": "counting"},
                                            "run": {"steps": 3}})), env=installed_plugins)
    assert done.returncode == 0, done.stderr
    deprecations = [line for line in done.stderr.splitlines() if "old form" in line]
    assert deprecations == [
        "slimcore: warning: plugin 'counting' (slimcore-counting-source 0.0.7) implements "
        "iterate_batches, corpus_text, the old form that goes in slimcore 0.3; register the "
        "new one instead (iterate_batches -> a slimcore.DataSource subclass from "
        "register_data_sources; corpus_text -> DataSource.corpus_text; docs/plugins.md)"]
