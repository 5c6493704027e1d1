"""Downstream tasks scored on a live model: multiple-choice task files and lm-evaluation-harness."""
