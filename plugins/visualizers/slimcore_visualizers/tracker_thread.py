"""What the experiment-tracker exporters (tensorboard, wandb, mlflow) share: their writes
happen on a thread of the exporter, so the training thread only queues a record.

A subclass names its section's dataclass (`config_class`; a field `enabled: bool` there turns
the tracker on and off: the core calls no hook of a plugin whose section says `enabled:
false`), implements `open(run)` (on the training thread, at the run's start), then
`write_metrics(record)`, `write_samples(step, records)`, `flush()` and `close(status)`, all
called on the exporter's thread in the order the run produced them. The queue is drained
and flushed before every checkpoint commits (what a checkpoint covers is in the tracker) and
at the end of the run. A tracker that raises is reported once, in one line, and sent nothing
more: a tracker never stops training.
"""

from __future__ import annotations

import importlib
import logging
import queue
import socket
import sys
import threading
from urllib.parse import urlparse

from slimcore import UserError, describe_error, hookimpl, traceback_wanted

# How long the end of a run and a checkpoint wait for a tracker to take what was queued.
DRAIN_TIMEOUT_S = 120
# How long a tracker's server gets to accept a connection before the run starts: the
# libraries' own retries said nothing for minutes (MLflow 254 s, W&B 97 s) of a dead one.
ANSWER_TIMEOUT_S = 5


class TrackerExporter:
    name = "tracker"  # the plugin's name: its section's, the thread's and the warning's
    config_class: type | None = None  # the section's dataclass
    # The library's loggers: their records lose their tracebacks (MLflow logs one for a
    # database error it then raises, and the failure is already one line of ours)
    library_loggers: tuple[str, ...] = ()

    def __init__(self):
        self.records: queue.Queue | None = None
        self.thread: threading.Thread | None = None
        self.failed = False

    # --- for subclasses ---------------------------------------------------------------------

    def require(self, module: str):
        """`module` imported, or the one line that says how to install it."""
        try:
            imported = importlib.import_module(module)
        except ImportError:
            raise UserError(f"{self.name}.enabled is true but the {self.name} package is not "
                            f"installed: pip install 'slimcore-visualizers[{self.name}]', or "
                            f"set {self.name}.enabled: false") from None
        without_tracebacks(self.library_loggers)  # its handlers exist once it is imported
        return imported

    def check_answers(self, url: str, setting: str) -> None:
        """The server at http(s) `url` accepts a connection within ANSWER_TIMEOUT_S, or the
        one line naming `setting` (other URLs, a file store, are the library's to open)."""
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            return
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            socket.create_connection((parsed.hostname, port), ANSWER_TIMEOUT_S).close()
        except (OSError, ValueError) as e:
            reason = "no answer" if isinstance(e, TimeoutError) else (
                getattr(e, "strerror", None) or str(e))
            raise UserError(f"{self.name}: nothing answers at {url} ({reason}, "
                            f"{ANSWER_TIMEOUT_S} s); start the server, or check {setting}"
                            ) from None

    def open(self, run) -> None:
        raise NotImplementedError

    def write_metrics(self, record: dict) -> None:
        raise NotImplementedError

    def write_samples(self, step: int, records: list[dict]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self, status: str) -> None:
        pass

    # --- the hooks --------------------------------------------------------------------------

    @hookimpl
    def declare_config(self):
        return {self.name: self.config_class} if self.config_class else {}

    @hookimpl
    def on_run_start(self, run):
        self.failed = False
        self.open(run)
        self.records = queue.Queue()
        self.thread = threading.Thread(target=self._work, daemon=True,
                                       name=f"{self.name}_export")
        self.thread.start()

    @hookimpl
    def on_metrics(self, metrics, run):
        if self.records is not None:
            self.records.put(("metrics", metrics.to_dict()))

    @hookimpl
    def on_text_samples(self, step, samples, run):
        if self.records is not None:
            self.records.put(("samples", (step, [s.to_dict() for s in samples])))

    @hookimpl
    def on_checkpoint(self, step, run):
        self._drain(("flush", None))

    @hookimpl
    def on_run_end(self, run, status, error):
        if self.thread is not None:
            self._drain(("close", status))
            self.thread = self.records = None

    # --- the thread -------------------------------------------------------------------------

    def _drain(self, command: tuple) -> None:
        """Have the thread do everything queued so far, then `command`; wait for it."""
        if self.records is None:
            return
        done = threading.Event()
        self.records.put((*command, done))
        done.wait(DRAIN_TIMEOUT_S)

    def _work(self) -> None:
        while True:
            kind, value, *done = self.records.get()
            try:
                if self.failed:
                    pass
                elif kind == "metrics":
                    self.write_metrics(value)
                elif kind == "samples":
                    self.write_samples(*value)
                elif kind == "flush":
                    self.flush()
                else:
                    self.close(value)
            except Exception as error:  # noqa: BLE001 - reported, and training goes on
                self.failed = True
                print(f"slimcore: warning: plugin '{self.name}' failed writing to its "
                      f"tracker: {describe_error(error)}; it gets nothing more this run",
                      file=sys.stderr, flush=True)
            if done:
                done[0].set()
            if kind == "close":
                return


def flat_config(config: dict) -> dict:
    """The resolved config as one level of `section.key` values (lists and nulls as text):
    what trackers take as hyperparameters / parameters."""
    flat = {}
    for section, values in config.items():
        for key, value in (values or {}).items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) \
                and value is not None else str(value)
    return flat


def scalars(record: dict) -> dict[str, float]:
    """A TrainingMetrics record's numbers under tracker names: `train/loss`, `eval/loss`,
    `tasks/arc_easy/acc_norm`, `data/share/books` (a mixture's share of the tokens),
    `eval/loss/books` (a mixture component's held-out loss)."""
    out = {f"{prefix}/{key}": value
           for field, prefix in (("task_scores", "tasks"), ("data_shares", "data/share"),
                                 ("eval_component_losses", "eval/loss"))
           for key, value in (record.get(field) or {}).items()
           if isinstance(value, (int, float))}
    for key, number in record.items():
        if key in NOT_SCALARS or not isinstance(number, (int, float)) \
                or isinstance(number, bool):
            continue
        out[f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"] = number
    return out


NOT_SCALARS = {"step", "timestamp", "memory_kind"}


class _NoTraceback(logging.Filter):
    """A record of a tracker library's logger (`names`) keeps its message and loses its
    traceback, unless SLIMCORE_TRACEBACK=1 asks for tracebacks; other loggers' records pass
    as they are."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.partition(".")[0] in self.names \
                and not traceback_wanted():
            record.exc_info, record.exc_text = None, None
        return True


_NO_TRACEBACK = _NoTraceback()


def without_tracebacks(names: tuple[str, ...]) -> None:
    """On every handler the records of loggers `names` reach (theirs, the root's, and
    logging's last resort): a handler filter sees the records of child loggers too."""
    _NO_TRACEBACK.names.update(names)
    handlers = [h for name in (*names, "") for h in logging.getLogger(name).handlers]
    for handler in [*handlers, logging.lastResort]:
        if handler is not None and _NO_TRACEBACK not in handler.filters:
            handler.addFilter(_NO_TRACEBACK)
