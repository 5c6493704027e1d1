"""slimcore's observers of a run, each an entry point of its own:

    json_export      metrics_history.json and text_samples.json
    tensorboard      TensorBoard event files: every metric, the samples, the config
    dashboard        the PNG dashboard of the enabled charts, rendered in another process
    compare          `slimcore compare RUN_DIR ...`: runs overlaid in one PNG
    loss, accuracy, throughput, learning_rate, loss_vs_accuracy, recent_performance,
    text_samples     the seven charts (charts.py)
"""
