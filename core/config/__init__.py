"""The run's configuration: the core's sections (typed dataclasses), strict YAML, overrides,
and parsing with every value checked before any work."""
