"""Every random state a run draws from, captured into a Checkpoint and put back on resume."""

from __future__ import annotations

from typing import Any

import torch


def capture_rng() -> dict[str, Any]:
    """Every random state this process draws from, as a Checkpoint's `rng`."""
    import random

    import numpy as np

    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": _listed(random.getstate()),
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Put back what `capture_rng` took; states an old checkpoint lacks (None) are left."""
    import random

    import numpy as np

    # clone(): a loaded state may be a view into a larger buffer (a checkpointer that reads
    # a file into one buffer), and the generators read their state from the storage's start.
    if rng.get("torch") is not None:
        torch.set_rng_state(rng["torch"].clone())
    if rng.get("cuda") and torch.cuda.is_available():
        for device, state in enumerate(rng["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.clone(), device)
    if rng.get("numpy") is not None:
        saved = rng["numpy"]
        np.random.set_state(("MT19937", saved["keys"].numpy().astype(np.uint32),
                             saved["position"], saved["has_gauss"], saved["cached_gaussian"]))
    if rng.get("python") is not None:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, (tuple, list)) else value
