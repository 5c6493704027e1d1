"""The training loop and what it drives: the step, the optimizer and schedule, evaluation,
checkpoints (built, copied to host buffers, written on a thread)."""
