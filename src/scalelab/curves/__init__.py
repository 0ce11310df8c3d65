"""Curves as data: schedule-aware laws (Tissue et al. 2024's annealing law, Luo et al. 2025's multi-power
law) fitted to every run's loss curve, so that any run spec's final loss can be predicted.

- `schedules`: a spec's lr at every step, from scalelab.plan.wsd and scalelab.train.schedule;
- `laws`: the two laws' equations; `fitting`: one law fitted to one size (scipy least squares);
- `data`, `inputs`: a study's curves as trajectories (the WSD trunks counted once);
- `heldout`: the checks the choice rests on; `model`: fit, choose, predict (`Curves`, `load_curves`);
- `command`: `scalelab curves`.
"""

from .model import Curves, load_curves
from .command import add_arguments, run

__all__ = ["Curves", "add_arguments", "load_curves", "run"]
