"""The public types between the core and its plugins: what a plugin implements (DataSource,
Checkpointer, ExportFormat, Chart) and what it is handed (Run, Batch, Checkpoint,
TrainingMetrics, TextSample, RunPaths, the errors). `slimcore/__init__` exports them."""
