"""The built-in plugin `optimizers`: the shipped optimizers (adamw, muon) and schedules
(cosine, linear, constant, wsd), registered as a third party's would be. The rules load when
asked for: listing plugins or reading a config imports no torch."""

from __future__ import annotations

from ..host.hookspecs import hookimpl
from .muon import MuonSection


class ShippedOptimizers:
    @hookimpl
    def declare_config(self):
        return {"muon": MuonSection}

    @hookimpl
    def register_optimizers(self):
        from .adamw import AdamWBuilder
        from .muon import MuonBuilder

        return [AdamWBuilder(), MuonBuilder()]

    @hookimpl
    def register_schedules(self):
        from .schedules import SCHEDULES

        return list(SCHEDULES)
