"""Plugin `tensorboard`: the run in TensorBoard's event files.

    <output_dir>/tensorboard/events.out.tfevents.*    `tensorboard --logdir runs/` shows
                                                       every run beside the others

Every step's metrics as scalars (`train/loss`, `train/accuracy`, `train/learning_rate`,
`train/tokens_per_second`, ...; `eval/loss`, `eval/accuracy` where the step evaluated), the
text samples as text (`samples/<prompt>`), the resolved config as hyperparameters and as
YAML text (`config`). The training thread only queues each record; a thread of this plugin
writes them. A resumed run starts its file with a purge mark at its first step, so
TensorBoard drops what an earlier process logged after the checkpoint (each step shows
once), and the files are flushed before every checkpoint (none is missing).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from slimcore import NonEmpty, hookimpl

NAME = "tensorboard"
NOT_SCALARS = {"step", "timestamp", "memory_kind"}


@dataclass
class TensorBoardConfig:
    # the folder of the event files; null: <output_dir>/tensorboard
    dir: Annotated[str, NonEmpty()] | None = None


class TensorBoardExporter:
    def __init__(self):
        self.records: queue.Queue | None = None
        self.thread: threading.Thread | None = None

    @hookimpl
    def declare_config(self):
        return {NAME: TensorBoardConfig}

    @hookimpl
    def on_run_start(self, run):
        from torch.utils.tensorboard import SummaryWriter

        settings: TensorBoardConfig = run.config.section(NAME)
        folder = Path(settings.dir or run.output_dir / "tensorboard")
        earlier = any(folder.glob("events.out.tfevents.*"))
        # This run logs steps N + 1 on (N: the step it resumed at, or 0): TensorBoard
        # discards what earlier files of the folder hold from there (a process killed after
        # its checkpoint, or before its first one).
        writer = SummaryWriter(str(folder), purge_step=run.start_step + 1)
        if not earlier:
            config = run.config.to_dict()
            writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False) + "```")
            write_hparams(writer, config)
        self.records = queue.Queue()
        self.thread = threading.Thread(target=self._write, args=(writer,), daemon=True,
                                       name="tensorboard_export")
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
        self._drain("flush")  # on disk before the checkpoint commits

    @hookimpl
    def on_run_end(self, run, status, error):
        if self.thread is not None:
            self._drain("close")
            self.thread = self.records = None

    def _drain(self, command: str) -> None:
        """Have the writer thread do everything queued so far, then `command`; wait for it."""
        if self.records is None:
            return
        done = threading.Event()
        self.records.put((command, done))
        done.wait(60)

    def _write(self, writer) -> None:
        while True:
            kind, value = self.records.get()
            if kind == "metrics":
                step = value["step"]
                for key, number in value.items():
                    if key in NOT_SCALARS or not isinstance(number, (int, float)) \
                            or isinstance(number, bool):
                        continue
                    tag = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
                    writer.add_scalar(tag, number, step, walltime=value.get("timestamp"))
            elif kind == "samples":
                step, samples = value
                for sample in samples:
                    writer.add_text(f"samples/{sample['prompt']}", sample["text"], step)
            else:
                writer.flush()
                if kind == "close":
                    writer.close()
                value.set()
                if kind == "close":
                    return


def write_hparams(writer, config: dict) -> None:
    """The config as TensorBoard hyperparameters: one per dotted key (lists and nulls as
    text), in the run's own folder (SummaryWriter.add_hparams would make a folder of its
    own)."""
    from torch.utils.tensorboard.summary import hparams

    flat = {}
    for section, values in config.items():
        for key, value in (values or {}).items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) \
                and value is not None else str(value)
    for summary in hparams(flat, {"train/loss": float("nan")}):
        writer.file_writer.add_summary(summary)
