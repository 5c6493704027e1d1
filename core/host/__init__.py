"""The plugin host: the hook specifications, discovery of entry points, the one registry of
named roles (data sources, checkpointers, export formats, charts), observer calls, and the
built-in `progress` plugin."""
