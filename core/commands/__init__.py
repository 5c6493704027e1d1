"""The `slimcore` command line: run, config, plugins, generate, eval, export, new-plugin."""
