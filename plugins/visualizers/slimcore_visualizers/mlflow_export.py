"""Plugin `mlflow`: the run in MLflow (optional: `pip install
'slimcore-visualizers[mlflow]'`; off until the run sets `mlflow.enabled: true`).

Every step's metrics (`train/loss`, ..., `eval/loss`) at the run's own step numbers, the
resolved config as parameters (`model.width`, ...) and as the artifact `config.yaml`, the
text samples as artifacts `samples/step_NNNNNNN.json`. The MLflow run carries the tag
`slimcore.run_id`: a resumed run finds it and continues it, sending only the steps past what
the MLflow run already has, so each step is there once (after a kill past a checkpoint the
resumed run trains those steps again to the same values: a resume is bitwise; a run resumed
from an older checkpoint on purpose, with another config, keeps the first values of the
steps MLflow had). Writes happen on a thread of the plugin; steps go to the store together, every
few seconds and before every checkpoint (one transaction a step cost CPU-bound runs 5-13%).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from slimcore import NonEmpty, UserError, describe_error

from .tracker_thread import TrackerExporter, flat_config, scalars

NAME = "mlflow"
RUN_ID_TAG = "slimcore.run_id"
# MLflow takes at most this many metrics (and 100 parameters) in one batch.
METRICS_PER_BATCH = 1000
PARAMS_PER_BATCH = 100
# Steps are sent together at most this often (and before every checkpoint and at the end):
# one store transaction a step, a database commit each, cost a CPU-bound run 5-13% of its
# steps/s on the development machine (bench/RESULTS.md).
SEND_EVERY_S = 5.0


@dataclass
class MlflowConfig:
    # Off unless asked: a run is sent to a tracking server only when its config says so.
    enabled: bool = False
    # null: MLflow's own (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working
    # folder); e.g. sqlite:///runs/mlflow.db, http://127.0.0.1:5000
    tracking_uri: Annotated[str, NonEmpty()] | None = None
    experiment: Annotated[str, NonEmpty()] = "slimcore"
    run_name: Annotated[str, NonEmpty()] | None = None  # null: run.name


# The start of a run retries a server that answers with errors once (MLflow's own 7 retries,
# backing off, said nothing for minutes); the run's later writes keep MLflow's policy.
START_RETRIES = "1"


@contextlib.contextmanager
def few_retries():
    """MLFLOW_HTTP_REQUEST_MAX_RETRIES at START_RETRIES for the block, unless the user set it
    (MLflow reads it at every request)."""
    key = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    if key in os.environ:
        yield
        return
    os.environ[key] = START_RETRIES
    try:
        yield
    finally:
        os.environ.pop(key, None)


def artifact_location(settings: MlflowConfig) -> str | None:
    """Where a new experiment keeps its artifacts: beside a sqlite store's file
    (`<its folder>/mlartifacts`), not in whatever folder the run was started from (MLflow's
    own default for a database store is `./mlruns` of the working folder); a server's or
    another store's own choice otherwise."""
    uri = settings.tracking_uri or ""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


class MlflowExporter(TrackerExporter):
    name = NAME
    config_class = MlflowConfig
    library_loggers = ("mlflow", "alembic", "sqlalchemy")

    def __init__(self):
        super().__init__()
        self.client = None
        self.run_id: str | None = None
        self.logged_through = 0  # the last step the MLflow run already had at the start
        self.pending: list = []  # metrics not yet sent
        self.sent_at = 0.0

    def open(self, run) -> None:
        MlflowClient = self.require("mlflow.tracking").MlflowClient
        settings: MlflowConfig = run.config.section(NAME)
        self.check_answers(settings.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""),
                           "mlflow.tracking_uri (or MLFLOW_TRACKING_URI)")
        try:
            with few_retries():
                self.client = MlflowClient(tracking_uri=settings.tracking_uri)
                self._start(run, settings)
        except Exception as error:  # a store MLflow cannot open, in MLflow's words
            raise UserError(f"mlflow: could not start the MLflow run at "
                            f"{settings.tracking_uri or 'the default tracking URI'} "
                            f"({describe_error(error)}); check mlflow.tracking_uri"
                            ) from None

    def _start(self, run, settings: MlflowConfig) -> None:
        experiment = self.client.get_experiment_by_name(settings.experiment)
        experiment_id = experiment.experiment_id if experiment else \
            self.client.create_experiment(settings.experiment,
                                          artifact_location=artifact_location(settings))
        earlier = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run.run_id}'",
            max_results=1) if run.run_id else []
        if earlier:
            self.run_id = earlier[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            history = self.client.get_metric_history(self.run_id, "train/loss")
            self.logged_through = max((m.step for m in history), default=0)
            return
        created = self.client.create_run(experiment_id, run_name=settings.run_name or run.name,
                                         tags={RUN_ID_TAG: run.run_id or ""})
        self.run_id = created.info.run_id
        from mlflow.entities import Param

        config = run.config.to_dict()
        params = [Param(key, str(value)) for key, value in flat_config(config).items()]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + PARAMS_PER_BATCH])
        import yaml

        self.client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False),
                             "config.yaml")

    def write_metrics(self, record: dict) -> None:
        step = record["step"]
        if step <= self.logged_through:
            return  # the MLflow run has it from the process before (the same values)
        from mlflow.entities import Metric

        millis = int(1000 * (record.get("timestamp") or time.time()))
        self.pending += [Metric(key, float(value), millis, step)
                         for key, value in scalars(record).items()]
        if time.monotonic() - self.sent_at >= SEND_EVERY_S:
            self.flush()

    def flush(self) -> None:
        for start in range(0, len(self.pending), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id,
                                  metrics=self.pending[start:start + METRICS_PER_BATCH])
        self.pending = []
        self.sent_at = time.monotonic()

    def write_samples(self, step: int, records: list[dict]) -> None:
        self.client.log_text(self.run_id, json.dumps(records, indent=1, ensure_ascii=False),
                             f"samples/step_{step:07d}.json")

    def close(self, status: str) -> None:
        self.flush()
        # A stopped run is resumable: KILLED, which the resumed process sets back to RUNNING.
        self.client.set_terminated(self.run_id, status={"completed": "FINISHED",
                                                        "stopped": "KILLED"}.get(status, "FAILED"))
        self.client = None
