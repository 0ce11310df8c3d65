"""The ready-to-paste YAML: new shapes from the study's own shape rules and the runs as `grid.extra`.

A new size gets the depth and head rule of the study's nearest shape (in log N): the same n_layer;
the same number of heads when every shape has the same number, else the same head size (d_model /
n_head) when every shape has that, else the nearest shape's heads. d_model is the width whose
non-embedding parameter count (scalelab.plan.shapes) comes nearest the size asked for, on the study's
own width step (the greatest common divisor of its widths, at most 64 and half the smallest, and a
multiple of the heads), so the suggested N is exactly what the shape trains.
"""

from __future__ import annotations

import math


from ..config.counts import compact_count
from ..plan.shapes import non_embedding_params

SAME = 0.02


class Shapes:
    def __init__(self, models: dict):
        self.models = {name: dict(shape) for name, shape in models.items()}
        self.params = {name: non_embedding_params(s["n_layer"], s["d_model"]) for name, s in self.models.items()}
        heads = {s["n_head"] for s in self.models.values()}
        head_sizes = {s["d_model"] // s["n_head"] for s in self.models.values()}
        self.rule = "heads" if len(heads) == 1 else "head_size" if len(head_sizes) == 1 else "nearest"
        widths = [s["d_model"] for s in self.models.values()]
        self.step = max(1, min(math.gcd(*widths), 64, min(widths) // 2))
        self.new: dict[str, dict] = {}

    def _nearest(self, params):
        return min(self.models, key=lambda name: (abs(math.log(self.params[name] / params)), name))

    def shape_for(self, params) -> dict:
        near = self.models[self._nearest(params)]
        n_layer = near["n_layer"]
        head_size = near["d_model"] // near["n_head"]
        unit = math.lcm(near["n_head"], self.step) if self.rule != "head_size" else head_size
        # 12·L·d² + (13·L + 2)·d = N, solved for d, then the nearest multiple of the unit.
        a, b = 12 * n_layer, 13 * n_layer + 2
        width = (-b + math.sqrt(b * b + 4 * a * params)) / (2 * a)
        best = None
        widths = {max(unit, int(math.floor(width / unit)) * unit), max(unit, int(math.ceil(width / unit)) * unit)}
        for d_model in sorted(widths):
            n = non_embedding_params(n_layer, d_model)
            if best is None or abs(math.log(n / params)) < abs(math.log(best[1] / params)):
                best = (d_model, n)
        d_model = best[0]
        n_head = near["n_head"] if self.rule != "head_size" else d_model // head_size
        return {"n_layer": n_layer, "d_model": d_model, "n_head": n_head}

    def realise(self, params) -> float | None:
        """The non-embedding parameters of the shape built for `params` (None if it is an existing size)."""
        shape = self.shape_for(params)
        return float(non_embedding_params(shape["n_layer"], shape["d_model"]))

    def name_for(self, params) -> str:
        """The study's model of this size, or a new shape's name (remembered for the snippet)."""
        for name, n in self.params.items():
            if abs(n / params - 1) <= SAME:
                return name
        for name, shape in self.new.items():
            if abs(non_embedding_params(shape["n_layer"], shape["d_model"]) / params - 1) <= SAME:
                return name
        shape = self.shape_for(params)
        base = f"L{shape['n_layer']}_d{shape['d_model']}"
        name, k = base, 1
        while name in self.models or name in self.new:
            k += 1
            name = f"{base}_{k}"
        self.new[name] = shape
        return name


def snippet(models: dict, table, note: str) -> tuple[str, list[dict]]:
    """The YAML text to paste, and the runs it adds ({model, tokens} each)."""
    shapes = Shapes(models)
    runs = [
        {"model": shapes.name_for(float(row.params)), "tokens": int(round(row.tokens))}
        for row in table.itertuples(index=False)
    ]
    lines = [
        f"# {note}",
        "# Paste into the config: add the models under `models:` and the runs under `grid:`",
        "# (append them to an existing `extra:` list); only these runs train.",
    ]
    if shapes.new:
        lines.append("models:")
        for name, shape in shapes.new.items():
            params = non_embedding_params(shape["n_layer"], shape["d_model"])
            lines.append(
                f"  {name}: {{n_layer: {shape['n_layer']}, d_model: {shape['d_model']}, "
                f"n_head: {shape['n_head']}}}   # {params:,} non-embedding parameters"
            )
    lines.append("grid:")
    lines.append("  extra:")
    for run in runs:
        lines.append(f"    - {{model: {run['model']}, tokens: {compact_count(run['tokens'])}}}")
    return "\n".join(lines) + "\n", runs
