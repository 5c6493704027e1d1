"""The `slimcore` command in real subprocesses: exit statuses and one-line errors."""

import json

import pytest
import yaml

from conftest import REPO


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("slimcore: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_quick_smoke_run_writes_outputs_and_loss_falls(cli, write_config, tmp_path):
    config = write_config({"run": {"steps": 12}})
    result = cli("run", str(config), "--set", "optimizer.lr=0.01")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    plugins = json.loads((out / "plugins.json").read_text())
    assert {p["name"]: p["status"] for p in plugins}["chunk"] == "loaded"
    # What this run uses, by distribution, the charts counted, then what is off.
    assert result.stdout.splitlines()[0] == (
        "plugins: slimcore-datasources 0.1.0 (chunk), slimcore-checkpointers 0.1.0 "
        "(three_file), slimcore-visualizers 0.1.0 (json_export, 9 charts); "
        "off: mlflow, wandb; blocked: dashboard, tensorboard")
    history = json.loads((out / "training_viz" / "metrics_history.json").read_text())
    assert [m["step"] for m in history] == list(range(1, 13))
    assert history[-1]["loss"] < history[0]["loss"] - 0.3
    assert yaml.safe_load((out / "config.yaml").read_text())["optimizer"]["lr"] == 0.01


def test_python_dash_m_and_help(cli):
    result = cli("--help")
    assert result.returncode == 0 and "run" in result.stdout and "plugins" in result.stdout
    from importlib.metadata import version

    result = cli("--version")
    assert result.returncode == 0 and result.stdout == f"slimcore {version('slimcore')}\n"


def test_config_prints_resolved_values_with_flags_applied(cli, write_config):
    config = write_config()
    result = cli("config", str(config), "--steps", "99", "--viz-interval", "7",
                 "--max-chunks", "3", "--set", "model.width=48", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["run"]["steps"] == 99
    assert resolved["json_export"]["every"] == 7  # --viz-interval: each plugin's own key
    assert resolved["chunk"]["max_chunks"] == 3
    assert resolved["model"]["width"] == 48
    assert resolved["run"]["name"] == "tiny"


def test_test_flag_makes_a_tiny_model(cli, write_config):
    result = cli("config", str(write_config({"model": {"width": 1536, "heads": 12}})), "--test")
    resolved = yaml.safe_load(result.stdout)
    assert resolved["model"]["width"] == 64 and resolved["run"]["steps"] == 10


def test_bad_input_unknown_key(cli, write_config):
    config = write_config({"model": {"widht": 3}})
    assert_one_line_error(cli("run", str(config)), "model.widht", "unknown key", str(config))


def test_bad_input_wrong_type(cli, write_config):
    config = write_config({"optimizer": {"lr": "fast"}})
    assert_one_line_error(cli("run", str(config)), "optimizer.lr: expected float")


def test_bad_input_wrong_type_from_set_names_the_flag(cli, write_config):
    result = cli("run", str(write_config()), "--set", "run.steps=many")
    assert_one_line_error(result, "--set: run.steps: expected int")


def test_bad_input_malformed_yaml(cli, write_config):
    config = write_config(text="model: {width: 64\n")
    assert_one_line_error(cli("run", str(config)), "malformed YAML", str(config))


def test_bad_input_duplicate_key(cli, write_config):
    config = write_config(text="run:\n  steps: 3\nrun:\n  steps: 4\n")
    assert_one_line_error(cli("run", str(config)), "duplicate key 'run'")


def test_bad_input_missing_config_file(cli, tmp_path):
    assert_one_line_error(cli("run", str(tmp_path / "missing.yaml")), "config file not found")


def test_bad_input_unknown_plugin_in_yaml(cli, write_config):
    config = write_config({"plugins": {"disable": ["no_such_plugin"]}})
    assert_one_line_error(cli("run", str(config)), "no plugin named 'no_such_plugin'")


def test_bad_input_unknown_data_source(cli, write_config):
    config = write_config({"data": {"source": "nowhere"}})
    assert_one_line_error(cli("run", str(config)), "data.source: unknown data source 'nowhere'",
                          "chunk, sample")


def test_bad_input_disabled_data_source(cli, write_config):
    config = write_config()
    assert_one_line_error(cli("run", str(config), "-p", "no:chunk"),
                          "data.source: data source 'chunk' is disabled")


def test_bad_input_bad_p_flag(cli):
    assert_one_line_error(cli("plugins", "-p", "chunk"), "expected -p no:NAME")


def test_bad_input_missing_data_path(cli, write_config, tmp_path):
    config = write_config({"corpus": {"path": str(tmp_path / "nothing" / "*.jsonl")}})
    assert_one_line_error(cli("run", str(config)), "corpus.path: no file matches")


def test_bad_input_a_model_larger_than_the_machine(cli, write_config):
    config = write_config({"model": {"width": 65536, "heads": 64, "layers": 400,
                                     "mlp_hidden": 65536}})
    assert_one_line_error(cli("run", str(config)), "model: ", "parameters need",
                          "GiB for weights, gradients and AdamW state", "shrink model.width")


def test_slimpajama_example_without_network_says_so(cli):
    result = cli("run", str(REPO / "examples" / "slimpajama.yaml"), "--device", "cpu",
                 env={"HF_HUB_OFFLINE": "1"}, timeout=60)
    assert_one_line_error(result, "Hugging Face Hub", "examples/quickstart.yaml", "corpus.path")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then let go)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_slimpajama_example_without_the_offline_flag_fails_fast(cli):
    """The Hub made unreachable on this machine (its endpoint a closed port of 127.0.0.1):
    the reachability probe answers in seconds, with one line."""
    result = cli("run", str(REPO / "examples" / "slimpajama.yaml"), "--device", "cpu",
                 env={"HF_HUB_OFFLINE": "", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"},
                 timeout=60)
    assert_one_line_error(result, "cannot reach the Hugging Face Hub (127.0.0.1")


@pytest.mark.parametrize("argv", [["run"], ["frobnicate"]])
def test_argument_errors_exit_2(cli, argv):
    assert cli(*argv).returncode == 2
