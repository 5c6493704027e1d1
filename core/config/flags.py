"""The core's command-line shorthands of `slimcore run` and `slimcore config`, each one `--set`
of a core key; plugins add theirs for their own keys through `declare_flags`."""

CORE_FLAGS = {
    "--steps": ("run.steps", "optimizer steps (run.steps)"),
    # Plugins that draw or write every N steps read it in their own key (the dashboard's
    # every, json_export's every): `slimcore config --viz-interval N` shows which.
    "--viz-interval": ("intervals.viz", "steps between dashboards and other periodic outputs "
                                        "(each plugin's own key)"),
    "--checkpoint-interval": ("intervals.checkpoint",
                              "steps between checkpoints (intervals.checkpoint)"),
    "--output-dir": ("output.dir", "where outputs go (output.dir; default runs/<name>)"),
    "--device": ("run.device", "auto, cpu, cuda, cuda:N (run.device)"),
    "--seed": ("run.seed", "seeds every generator and the data order (run.seed)"),
    "--init-from": ("model.init_from", "start from a local Hugging Face Llama folder: its "
                                       "shape, weights and tokenizer (model.init_from)"),
}
