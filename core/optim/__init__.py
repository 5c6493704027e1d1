"""Optimizers and learning-rate schedules: the parameter groups, the shipped rules (AdamW,
Muon) and schedules, registered by the built-in plugin `optimizers` like a third party's."""
