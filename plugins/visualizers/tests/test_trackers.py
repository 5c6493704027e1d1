"""The optional W&B and MLflow exporters, read back with each tracker's own format: W&B's
offline run file (its protobuf records), MLflow's client on a local sqlite store."""

import json
import os
import struct
import sys

import pytest
from slimcore import UserError
from slimcore.testing import tiny_run

RUN = {"samples": {"prompts": ["We the"]}, "eval": {"interval": 3, "batches": 1},
       "intervals": {"checkpoint": 3}}


def history_losses(folder):
    return {m["step"]: m["loss"] for m in
            json.loads((folder / "training_viz" / "metrics_history.json").read_text())}


def read_wandb_records(path):
    """The records of a `.wandb` file: W&B's framing is LevelDB's log format (32 KiB blocks,
    each record a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)
    and its bytes) behind a 7-byte file header; each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        position += 7
        if kind == 0 and length == 0:
            position += left - 7
            continue
        pending += data[position:position + length]
        position += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_runs(folder):
    """[(run id, config, {step: {key: value}})] of the offline runs under folder/wandb, oldest
    first (a resumed run is a second offline run of the same id)."""
    runs = []
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        run_id, config, steps = None, {}, {}
        for record in read_wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
                config = {u.key: json.loads(u.value_json) for u in record.run.config.update}
            elif kind == "history":
                items = {(i.nested_key[0] if i.nested_key else i.key): json.loads(i.value_json)
                         for i in record.history.item}
                steps[items["_step"]] = items
        runs.append((run_id, config, steps))
    return runs


def test_wandb_offline_has_every_step_the_samples_and_the_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    off = tiny_run(tmp_path / "off", steps=2)
    assert off.status == "completed" and not (off.output_dir / "wandb").exists()

    out = tmp_path / "on"
    wandb = {"wandb": {"enabled": True, "mode": "offline"}}
    monkeypatch.delenv("WANDB_ERROR_REPORTING")  # the suite's own setting, off
    first = tiny_run(out, steps=6, enable=["json_export"], config={**RUN, **wandb})
    assert first.status == "completed"
    # Offline sends nothing: W&B's error reporting (it posted from a thread) is off too.
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"
    [(run_id, config, steps)] = wandb_runs(out)
    assert run_id == first.run.run_id
    assert config["model"]["width"] == 32 and config["run"]["steps"] == 6
    losses = history_losses(out)
    assert sorted(steps) == sorted(losses) == list(range(1, 7))
    assert {s: v["train/loss"] for s, v in steps.items()} == pytest.approx(losses, rel=1e-6)
    assert [s for s, v in steps.items() if "eval/loss" in v] == [3, 6]
    tables = out.glob("wandb/offline-run-*/files/media/table/samples_*.table.json")
    rows = [row for t in tables for row in json.loads(t.read_text())["data"]]
    samples = json.loads((out / "training_viz" / "text_samples.json").read_text())
    assert sorted(rows) == sorted([s["step"], s["prompt"], s["text"]] for s in samples)

    # Trained on to step 8: the same W&B run (its id), sent the steps after the checkpoint.
    more = tiny_run(out, steps=8, resume="auto", enable=["json_export"],
                    config={**RUN, **wandb})
    assert more.status == "completed" and more.run.run_id == run_id
    [_, (again_id, _, again)] = wandb_runs(out)
    assert again_id == run_id and sorted(again) == [7, 8]
    assert {s: v["train/loss"] for s, v in again.items()} == \
        pytest.approx({s: history_losses(out)[s] for s in (7, 8)}, rel=1e-6)


@pytest.mark.parametrize("tracker, module", [("wandb", "wandb"),
                                             ("mlflow", "mlflow.tracking")])
def test_a_tracker_enabled_without_its_package_is_one_line(tmp_path, monkeypatch, tracker,
                                                           module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import fails
    with pytest.raises(UserError, match=rf"{tracker}.enabled is true but the {tracker} "
                       rf"package is not installed: pip install 'slimcore-visualizers"
                       rf"\[{tracker}\]', or set {tracker}.enabled: false"):
        tiny_run(tmp_path / "out", steps=1, config={tracker: {"enabled": True}})


def mlflow_store(tmp_path):
    return {"enabled": True, "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "experiment": "tests"}


def test_mlflow_has_every_step_once_through_a_resume_the_config_and_samples(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "on"
    mlflow = {"mlflow": mlflow_store(tmp_path)}
    first = tiny_run(out, steps=6, enable=["json_export"], config={**RUN, **mlflow})
    assert first.status == "completed"
    client = MlflowClient(tracking_uri=mlflow["mlflow"]["tracking_uri"])
    experiment = client.get_experiment_by_name("tests")
    [found] = client.search_runs([experiment.experiment_id])
    assert found.data.tags["slimcore.run_id"] == first.run.run_id
    assert found.info.status == "FINISHED"
    assert found.data.params["model.width"] == "32" and found.data.params["run.steps"] == "6"

    def losses():
        return [(m.step, m.value) for m in
                client.get_metric_history(found.info.run_id, "train/loss")]

    assert losses() == [(s, pytest.approx(v, rel=1e-6)) for s, v in history_losses(out).items()]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "eval/loss")] == [3, 6]
    # Artifacts beside the sqlite store, not in the folder the test (or a user) started in.
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert (tmp_path / "mlartifacts").is_dir()
    names = [a.path for a in client.list_artifacts(found.info.run_id, "samples")]
    samples = json.loads((out / "training_viz" / "text_samples.json").read_text())
    assert names == [f"samples/step_{s['step']:07d}.json" for s in samples]
    config = client.download_artifacts(found.info.run_id, "config.yaml", str(tmp_path))
    assert "width: 32" in open(config).read()

    # Resumed from step 3, as after a kill past it: the run trains steps 4-6 again (to the
    # same values: a resume is bitwise), and the MLflow run keeps each step once.
    checkpoint = out / "checkpoints" / "checkpoint_step_3.bin"
    more = tiny_run(out, steps=6, resume=str(checkpoint), enable=["json_export"],
                    config={**RUN, **mlflow})
    assert more.status == "completed"
    assert [run.info.run_id for run in client.search_runs([experiment.experiment_id])] == \
        [found.info.run_id]
    assert [s for s, _ in losses()] == list(range(1, 7))
    assert losses() == [(s, pytest.approx(v, rel=1e-6)) for s, v in history_losses(out).items()]


def test_mlflow_with_a_store_it_cannot_open_is_one_line(tmp_path):
    pytest.importorskip("mlflow")
    with pytest.raises(UserError, match=r"mlflow: could not start the MLflow run at "
                                         r"nosuchscheme://x .*check mlflow.tracking_uri"):
        tiny_run(tmp_path / "out", steps=1,
                 config={"mlflow": {"enabled": True, "tracking_uri": "nosuchscheme://x"}})


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_tracker_pointed_at_a_dead_local_server_is_one_line_at_once(tmp_path, monkeypatch,
                                                                      tracker):
    """A port on 127.0.0.1 where nothing listens (MLflow's URI, W&B's WANDB_BASE_URL): the
    run stops within seconds with one line naming the URL (the libraries' retries said
    nothing for 254 s and 97 s)."""
    import socket
    import time

    pytest.importorskip(tracker)
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    if tracker == "mlflow":
        config = {"mlflow": {"enabled": True, "tracking_uri": url}}
    else:
        monkeypatch.setenv("WANDB_BASE_URL", url)
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        config = {"wandb": {"enabled": True, "mode": "online"}}
    started = time.monotonic()
    with pytest.raises(UserError, match=f"{tracker}: nothing answers at {url} "):
        tiny_run(tmp_path / "out", steps=1, config=config)
    assert time.monotonic() - started < 60


def test_mlflow_at_a_server_that_answers_errors_is_one_line_within_a_minute(tmp_path):
    """A server on 127.0.0.1 that answers 500 to everything: the start retries once, then one
    line (MLflow's own seven retries, backing off, said nothing for minutes)."""
    import http.server
    import threading
    import time

    pytest.importorskip("mlflow")

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(500)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(UserError, match=f"mlflow: could not start the MLflow run at {url} "):
            tiny_run(tmp_path / "out", steps=1,
                     config={"mlflow": {"enabled": True, "tracking_uri": url}})
    finally:
        server.shutdown()
    assert time.monotonic() - started < 60
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the run's writes: MLflow's


def test_a_trackers_library_logs_no_traceback(capfd, monkeypatch):
    """MLflow logs a traceback for a database error it then raises (a full disk, a locked
    store), on its own handler: with the exporter's library loaded its records keep their
    line and lose the traceback, unless SLIMCORE_TRACEBACK=1."""
    import logging

    pytest.importorskip("mlflow")
    from slimcore_visualizers.mlflow_export import MlflowExporter

    MlflowExporter().require("mlflow.tracking")
    logger = logging.getLogger("mlflow.store.db.utils")
    for wanted in ("", "1"):
        monkeypatch.setenv("SLIMCORE_TRACEBACK", wanted)
        try:
            raise OSError("disk I/O error")
        except OSError:
            logger.exception("SQLAlchemy database error")
        err = capfd.readouterr().err
        assert "SQLAlchemy database error" in err
        assert ("Traceback" in err) == bool(wanted), err


def test_a_tracker_that_fails_while_writing_is_reported_once_and_training_goes_on(
        tmp_path, capfd):
    from slimcore_visualizers.tracker_thread import TrackerExporter

    class Unreachable(TrackerExporter):
        name = "unreachable"

        def __init__(self):
            super().__init__()
            self.steps = []

        def open(self, run):
            pass

        def write_metrics(self, record):
            if record["step"] == 2:
                raise ConnectionError("tracking server went away")
            self.steps.append(record["step"])

        def write_samples(self, step, records):
            pass

    tracker = Unreachable()
    result = tiny_run(tmp_path / "out", plugins={"unreachable": tracker}, steps=5)
    assert result.status == "completed" and len(result.metrics) == 5
    assert tracker.steps == [1]  # nothing more after the failure
    warnings = [line for line in capfd.readouterr().err.splitlines() if "unreachable" in line]
    assert warnings == ["slimcore: warning: plugin 'unreachable' failed writing to its tracker: "
                        "ConnectionError: tracking server went away; it gets nothing more this "
                        "run"]
