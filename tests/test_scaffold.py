"""`slimcore new-plugin`: each kind's distribution, pip-installed as generated, passes its
own tests (which use slimcore.testing), and `slimcore plugins` lists it."""

import json
import os
import subprocess
import sys

import pytest

from conftest import run_cli
from slimcore.commands.cli import main
from slimcore.commands.new_plugin import KINDS, new_plugin

# What each generated distribution's tests number: a change to a template that drops a test
# shows here.
TESTS = {"chart": 2, "observer": 2, "source": 2, "checkpointer": 2, "export": 1, "command": 2,
         "optimizer": 2}


@pytest.mark.slow  # five pip installs and five suites: set-up, the slow tier
def test_every_kind_installs_and_passes_its_own_tests(tmp_path):
    assert set(TESTS) == set(KINDS)
    sources = [str(tmp_path / "src" / kind) for kind in KINDS]
    done = run_cli("new-plugin", "chart", "my_chart", "--output", sources[0])  # the command
    assert done.returncode == 0, done.stderr
    assert "pip install -e . && pytest" in done.stdout
    for kind, folder in list(zip(KINDS, sources))[1:]:  # the same code, in this process
        new_plugin(kind, f"my_{kind}", folder)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--target",
                    str(site), *sources], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    listed = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    for kind in KINDS:
        assert listed[f"my_{kind}"]["status"] == "loaded", listed[f"my_{kind}"]
        assert listed[f"my_{kind}"]["distribution"] == f"slimcore-my-{kind}"
    # Each distribution's tests, run where they were written, as its author would.
    tests = [str(tmp_path / "src" / kind / "tests") for kind in KINDS]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", "-o", "addopts=", *tests], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"{sum(TESTS.values())} passed" in done.stdout


def test_bad_kinds_names_and_folders_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.txt").write_text("mine")
    for args, says in [(["widget", "x"], "unknown kind 'widget' (kinds: chart, observer"),
                       (["chart", "My-Chart"], "'My-Chart' is not a plugin name"),
                       (["chart", "ok", "--output", str(tmp_path)], "is not an empty folder")]:
        assert main(["new-plugin", *args]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.txt"]
