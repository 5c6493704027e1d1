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

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from slimcore import NonEmpty

from .tracker_thread import TrackerExporter, flat_config, scalars

NAME = "tensorboard"


@dataclass
class TensorBoardConfig:
    # the folder of the event files; null: <output_dir>/tensorboard
    dir: Annotated[str, NonEmpty()] | None = None


class TensorBoardExporter(TrackerExporter):
    name = NAME
    config_class = TensorBoardConfig

    def __init__(self):
        super().__init__()
        self.writer = None

    def open(self, run) -> None:
        from torch.utils.tensorboard import SummaryWriter

        settings: TensorBoardConfig = run.config.section(NAME)
        folder = Path(settings.dir or run.output_dir / "tensorboard")
        earlier = any(folder.glob("events.out.tfevents.*"))
        # This run logs steps N + 1 on (N: the step it resumed at, or 0): TensorBoard
        # discards what earlier files of the folder hold from there (a process killed after
        # its checkpoint, or before its first one).
        self.writer = SummaryWriter(str(folder), purge_step=run.start_step + 1)
        if not earlier:
            config = run.config.to_dict()
            self.writer.add_text("config", "```\n" + yaml.safe_dump(config, sort_keys=False)
                                 + "```")
            write_hparams(self.writer, config)

    def write_metrics(self, record: dict) -> None:
        for tag, number in scalars(record).items():
            self.writer.add_scalar(tag, number, record["step"], walltime=record.get("timestamp"))

    def write_samples(self, step: int, records: list[dict]) -> None:
        for sample in records:
            self.writer.add_text(f"samples/{sample['prompt']}", sample["text"], step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()
        self.writer = None


def write_hparams(writer, config: dict) -> None:
    """The config as TensorBoard hyperparameters: one per dotted key (lists and nulls as
    text), in the run's own folder (SummaryWriter.add_hparams would make a folder of its
    own)."""
    from torch.utils.tensorboard.summary import hparams

    for summary in hparams(flat_config(config), {"train/loss": float("nan")}):
        writer.file_writer.add_summary(summary)
