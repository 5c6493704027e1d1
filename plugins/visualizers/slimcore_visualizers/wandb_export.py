"""Plugin `wandb`: the run in Weights & Biases (optional: `pip install
'slimcore-visualizers[wandb]'`; off until the run sets `wandb.enabled: true`).

Every step's metrics (`train/loss`, ..., `eval/loss` where the step evaluated) at the run's
own step numbers, the text samples as a table per sampling step (`samples`: step, prompt,
text), the resolved config as the W&B config. The W&B run's id is slimcore's run id, so a
resumed run continues the same W&B run (`resume="allow"`). `wandb.mode: offline` writes
`<dir>/wandb/offline-run-*` with no network (`wandb sync` uploads it later).

A resumed run sends steps from its checkpoint on; steps a killed process sent past its
checkpoint are sent again by the resumed one, with the same values (a resume is bitwise),
and W&B keeps the first it got for a step. Writes happen on a thread of the plugin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from slimcore import NonEmpty, UserError, describe_error

from .tracker_thread import TrackerExporter, scalars

NAME = "wandb"
SAMPLE_COLUMNS = ["step", "prompt", "text"]


@dataclass
class WandbConfig:
    # Off unless asked: a run's data leaves the machine only when its config says so.
    enabled: bool = False
    project: Annotated[str, NonEmpty()] = "slimcore"
    entity: Annotated[str, NonEmpty()] | None = None  # null: your W&B default entity
    # auto: W&B's own choice (WANDB_MODE, else online); offline: local files, no network
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    dir: Annotated[str, NonEmpty()] | None = None  # null: the run's output folder
    name: Annotated[str, NonEmpty()] | None = None  # null: run.name
    tags: list[str] = field(default_factory=list)


class WandbExporter(TrackerExporter):
    name = NAME
    config_class = WandbConfig
    library_loggers = ("wandb",)

    def __init__(self):
        super().__init__()
        self.wandb_run = None

    def open(self, run) -> None:
        wandb = self.require("wandb")
        settings: WandbConfig = run.config.section(NAME)
        folder = Path(settings.dir or run.output_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"wandb.dir: cannot write {folder} ({e.strerror or e}); give a "
                            "folder you can write to") from None
        if settings.mode == "offline":
            # Offline means nothing leaves the machine: W&B's own error reporting (posted to
            # its servers from a thread, even offline) stays off unless the user turned it on.
            os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
        wanted = os.environ.get("WANDB_MODE", "online") if settings.mode == "auto" else \
            settings.mode
        if wanted == "online":
            self.check_answers(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"),
                               "WANDB_BASE_URL (or set wandb.mode: offline)")
        try:
            self.wandb_run = wandb.init(
                project=settings.project, entity=settings.entity, name=settings.name or run.name,
                id=run.run_id, resume="allow", dir=str(folder), config=run.config.to_dict(),
                tags=settings.tags or None,
                mode=None if settings.mode == "auto" else settings.mode,
                # slimcore's console is its own: W&B does not wrap stdout and stderr.
                settings=wandb.Settings(console="off"))
        except Exception as error:  # a login, network or settings failure, in W&B's words
            raise UserError(f"wandb: could not start the W&B run ({describe_error(error)}); "
                            "check wandb.project / wandb.entity, run `wandb login`, or set "
                            "wandb.mode: offline") from None

    def write_metrics(self, record: dict) -> None:
        self.wandb_run.log(scalars(record), step=record["step"])

    def write_samples(self, step: int, records: list[dict]) -> None:
        import wandb

        table = wandb.Table(columns=SAMPLE_COLUMNS,
                            data=[[step, r["prompt"], r["text"]] for r in records])
        self.wandb_run.log({"samples": table}, step=step)

    def close(self, status: str) -> None:
        # A stopped run is resumable, not failed: W&B marks a non-zero exit as crashed.
        self.wandb_run.finish(exit_code=1 if status == "failed" else 0)
        self.wandb_run = None
