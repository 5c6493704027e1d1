"""The PNG dashboard: real files from real runs, rendered by the real worker process."""

import json
import subprocess
import sys
import time

import pytest

from PIL import Image

from slimcore_visualizers.charts import LossChart

ON = {"plugins": {"disable": []}}  # the suite's tiny config has the dashboard off
SEVEN = ["loss", "accuracy", "throughput", "learning_rate", "loss_vs_accuracy",
         "recent_performance", "text_samples"]


def charts_in(png):
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        description = image.text["Description"]
    assert description.startswith("slimcore charts: ")
    return description[len("slimcore charts: "):].split(", ")


def test_run_writes_step_and_latest_pngs_with_all_charts(cli, write_config, tmp_path):
    result = cli("run", str(write_config({**ON, "run": {"steps": 6}})))
    assert result.returncode == 0, result.stderr
    viz = tmp_path / "out" / "training_viz"
    latest = viz / "training_latest.png"
    assert charts_in(latest) == SEVEN
    # The final render always happens; earlier ones may be coalesced into it.
    assert (viz / "training_step_000006.png").read_bytes() == latest.read_bytes()


def test_disabling_charts_in_yaml_removes_them(cli, write_config, tmp_path):
    config = write_config({**ON, "run": {"steps": 3},
                           "dashboard": {"disable": ["throughput", "loss_vs_accuracy"]}})
    assert cli("run", str(config)).returncode == 0
    shown = charts_in(tmp_path / "out" / "training_viz" / "training_latest.png")
    assert shown == [c for c in SEVEN if c not in ("throughput", "loss_vs_accuracy")]
    # The same through plugins.disable: the chart's plugin is then never imported. And a
    # run that draws no samples gets no (empty) samples table.
    config = write_config({"run": {"steps": 3}, "plugins": {"disable": ["loss"]},
                           "samples": {"prompts": []}})
    assert cli("run", str(config), "--overwrite").returncode == 0
    shown = charts_in(tmp_path / "out" / "training_viz" / "training_latest.png")
    assert shown[0] == "accuracy" and "text_samples" not in shown


def test_a_chart_no_loaded_plugin_registers_is_a_warning_not_a_failure(cli, write_config):
    """A chart of a blocked (or uninstalled) plugin may stay in dashboard.disable, as its
    section may stay in the YAML; a misspelled name gets a suggestion."""
    config = write_config({**ON, "run": {"steps": 1},
                           "dashboard": {"disable": ["loss", "acuracy"]}})
    result = cli("run", str(config), "-p", "no:loss", "-p", "no:tensorboard")
    assert result.returncode == 0, result.stderr
    assert "dashboard.disable: no loaded plugin registers a chart named 'loss'; ignored" \
        in result.stderr
    assert "named 'acuracy' (did you mean 'accuracy'?); ignored" in result.stderr


def worker():
    return subprocess.Popen([sys.executable, "-m", "slimcore_visualizers.render_worker"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def send(process, message):
    process.stdin.write(json.dumps(message) + "\n")
    process.stdin.flush()


def metrics(steps):
    return [{"step": s, "loss": 5.0 / s, "accuracy": s / 100, "learning_rate": 1e-3,
             "tokens_per_second": 900.0, "grad_norm": 1.0} for s in steps]


def wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def settings(tmp_path, charts):
    return {"output_dir": str(tmp_path), "charts": charts, "plugins": charts,
            "moving_average": 50,
            "recent_window": 200, "columns": 3, "dpi": 60, "run_name": "test",
            "max_cpu_share": 1.0}


def test_pngs_change_between_intervals(tmp_path):
    process = worker()
    send(process, settings(tmp_path, SEVEN))
    viz = tmp_path / "training_viz"
    for step in (5, 10):
        send(process, {"metrics": metrics(range(step - 4, step + 1)), "render": step})
        wait_for(viz / f"training_step_{step:06d}.png")
    process.stdin.close()
    assert process.wait(timeout=120) == 0
    first = (viz / "training_step_000005.png").read_bytes()
    second = (viz / "training_step_000010.png").read_bytes()
    assert first != second
    assert (viz / "training_latest.png").read_bytes() == second


def test_requests_that_pile_up_become_one_render_of_the_newest_step(tmp_path):
    process = worker()
    # All of it is in the pipe long before the worker has imported matplotlib.
    send(process, settings(tmp_path, ["loss"]))
    for step in (5, 10, 15, 20):
        send(process, {"metrics": metrics(range(step - 4, step + 1)), "render": step})
    process.stdin.close()
    assert process.wait(timeout=120) == 0
    viz = tmp_path / "training_viz"
    assert [p.name for p in viz.glob("training_step_*.png")] == ["training_step_000020.png"]


def test_a_chart_that_raises_is_switched_off_with_one_warning(tmp_path, installed_plugins):
    """One warning; with SLIMCORE_TRACEBACK=1 (inherited by the render process) the
    chart's traceback follows it."""
    env = {**installed_plugins, "SLIMCORE_TRACEBACK": "1"}
    import os

    process = subprocess.Popen([sys.executable, "-m", "slimcore_visualizers.render_worker"],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **env})
    send(process, settings(tmp_path, ["loss", "exploding_chart"]))
    for step in (5, 10):
        send(process, {"metrics": metrics(range(step - 4, step + 1)), "render": step})
        wait_for(tmp_path / "training_viz" / f"training_step_{step:06d}.png")
    process.stdin.close()
    assert process.wait(timeout=60) == 0
    err = process.stderr.read()
    assert err.count("chart 'exploding_chart' failed and is switched off: "
                     "ZeroDivisionError") == 1
    assert err.count("Traceback (most recent call last)") == 1 and "in draw" in err
    assert charts_in(tmp_path / "training_viz" / "training_latest.png") == ["loss"]


def test_run_with_a_raising_chart_finishes(cli, write_config, installed_plugins, tmp_path):
    result = cli("run", str(write_config({**ON, "run": {"steps": 3}})), env=installed_plugins)
    assert result.returncode == 0, result.stderr
    assert "chart 'exploding_chart' failed" in result.stderr
    assert "exploding_chart" not in charts_in(tmp_path / "out" / "training_viz" /
                                              "training_latest.png")


@pytest.mark.slow  # a pip install: set-up, the slow tier
def test_third_party_chart_installed_with_pip(cli, write_config, tmp_path, tmp_path_factory):
    from conftest import REPO

    target = tmp_path_factory.mktemp("viz-example")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--target",
                    str(target), str(REPO / "examples" / "slimcore-viz-example")],
                   check=True, capture_output=True)
    env = {"PYTHONPATH": str(target)}
    listing = json.loads(cli("plugins", "--json", env=env).stdout)
    example = next(p for p in listing if p["name"] == "grad_norm")
    assert (example["distribution"], example["status"]) == ("slimcore-viz-example", "loaded")
    assert cli("run", str(write_config({**ON, "run": {"steps": 3}})), env=env).returncode == 0
    png = tmp_path / "out" / "training_viz" / "training_latest.png"
    assert charts_in(png) == SEVEN[:-1] + ["grad_norm", "text_samples"]
    config = write_config({**ON, "run": {"steps": 3}, "dashboard": {"disable": ["grad_norm"]}})
    assert cli("run", str(config), "--overwrite", env=env).returncode == 0
    assert "grad_norm" not in charts_in(png)
    # The example's own tests pass against the installed package.
    tests = REPO / "examples" / "slimcore-viz-example" / "tests"
    # Without the suite's own options (two xdist workers, each importing torch, for 2 tests).
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-p", "no:xdist", "-o", "addopts=", str(tests)],
                            capture_output=True, text=True,
                            env={**__import__("os").environ, **env}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout


def test_loss_chart_is_importable_without_matplotlib_on_the_training_side():
    # The training process imports chart classes only for their names; matplotlib loads
    # in the render process.
    code = ("import sys, slimcore_visualizers.charts, slimcore_visualizers.dashboard; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
    assert LossChart.name == "loss"


@pytest.mark.parametrize("cpu_s, wall_s, share, quiet_s", [
    (1.0, 1.1, 0.05, 0.0),     # a core to itself: the next interval may render at once
    (0.5, 0.5, 0.01, 0.0),
    (1.0, 4.0, 0.05, 19.0),    # waited for the CPU: 1 s of render buys 19 s of quiet
    (0.3, 3.0, 0.01, 29.7),
    (1.0, 4.0, 1.0, 0.0),      # a share of a whole core: never spaced
])
def test_renders_are_spaced_only_where_training_leaves_no_core_free(cpu_s, wall_s, share,
                                                                    quiet_s):
    from slimcore_visualizers.render_worker import quiet_after

    assert quiet_after(cpu_s, wall_s, share) == pytest.approx(quiet_s)


def test_the_last_render_request_is_drawn_when_the_run_ends(tmp_path):
    process = worker()
    send(process, {**settings(tmp_path, ["loss"]), "max_cpu_share": 0.01})
    send(process, {"metrics": metrics(range(1, 11)), "render": 10})
    process.stdin.close()  # the run ends at once: the pending request is still rendered
    assert process.wait(timeout=60) == 0
    assert (tmp_path / "training_viz" / "training_step_000010.png").exists()


@pytest.mark.slow
def test_every_interval_gets_its_png_where_a_core_is_free(write_config, installed_plugins,
                                                          tmp_path):
    """A run that leaves a core free (here: a data stream slower than the step) gets a
    dashboard for every interval, not one every ~20 s of render time."""
    from conftest import run_cli

    config = write_config({"data": {"source": "counting"}, "run": {"steps": 8},
                           "dashboard": {"every": 2}, "plugins": {"disable": ["json_export"]}})
    result = run_cli("run", str(config), env={**installed_plugins, "COUNTING_PAUSE_S": "2"})
    assert result.returncode == 0, result.stderr
    drawn = sorted(p.name for p in (tmp_path / "out" / "training_viz").glob("*_0*.png"))
    assert drawn == [f"training_step_{step:06d}.png" for step in (2, 4, 6, 8)]


def test_render_process_loads_only_chart_plugins_and_no_torch():
    # Its start-up competes with training for the CPU: it must stay light.
    code = ("import sys; import slimcore_visualizers.render_worker as w; "
            "print([c.name for c in w.load_charts(['loss'], ['loss'])], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "['loss'] False", out.stderr


def steps_in(png):
    with Image.open(png) as image:
        return image.text["Steps"]


def test_a_resumed_dashboard_shows_the_earlier_steps_without_json_export(write_config,
                                                                         tmp_path):
    """The core hands a resumed run's earlier steps to every observer: the dashboard needs
    no other plugin's files to draw the whole run."""
    from conftest import run_in_process

    config = write_config({"plugins": {"disable": ["json_export"]}, "run": {"steps": 4},
                           "intervals": {"checkpoint": 2}, "dashboard": {"every": 2},
                           "json_export": {"every": 2}})
    run_in_process(config)
    latest = tmp_path / "out" / "training_viz" / "training_latest.png"
    assert steps_in(latest) == "1-4"
    run_in_process(config, overrides=["run.steps=6"], resume="auto")
    assert not (tmp_path / "out" / "training_viz" / "metrics_history.json").exists()
    assert steps_in(latest) == "1-6"
    log = (tmp_path / "out" / "history" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_in_a_terminal_stops_the_run_and_the_last_dashboard_is_still_drawn(
        write_config, tmp_path):
    """A terminal's Ctrl-C is SIGINT to every process of the foreground group, the render
    process too: the run saves and exits 130, and the render process, which ignores it, draws
    the last step (it used to die in a KeyboardInterrupt traceback, drawing nothing)."""
    import os
    import signal

    from conftest import guarded

    config = write_config({**ON, "run": {"steps": 2000}, "dashboard": {"every": 1000}})
    process = subprocess.Popen([sys.executable, "-m", "slimcore", "run", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=guarded(), cwd=tmp_path, start_new_session=True)
    log = tmp_path / "out" / "history" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and len(log.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)  # the whole group, as a terminal does
    out, err = process.communicate(timeout=180)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    steps = len(log.read_text().splitlines())
    assert steps_in(tmp_path / "out" / "training_viz" / "training_latest.png") == f"1-{steps}"
