"""A run from its config to its end around the training loop: the output folder, the job's
ranks, resume, the history log, signals and the stall watchdog."""
