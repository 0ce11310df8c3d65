"""What `scalelab curves` reads from a study folder: its config (the run specs) and the curves of
its finished runs, with the trunk checkpoints' rows, as trajectories per model size."""

from __future__ import annotations

from pathlib import Path

from ..plan import wsd
from ..errors import ScalelabError
from .data import Trajectory, finished_runs, read_curve, run_trajectories, trunk_checkpoint_rows, trunk_trajectory
from .data import first_step, usable


def study_config(study_dir: Path, config_path: Path | None = None) -> dict:
    from ..config.load import load

    path = Path(config_path) if config_path else Path(study_dir) / "config" / "config.yaml"
    if not path.exists():
        raise ScalelabError(f"{path}: the study's config not found (pass --config)")
    return load(path)


def study_specs(config: dict) -> dict[str, dict]:
    """Every run of the study's config by id (grid.expand_grid: the specs the workflow trains)."""
    from ..plan.grid import expand_grid

    return {run.id: run.spec for run in expand_grid(config)}


def fit_target(config: dict) -> str:
    target = (config.get("fit") or {}).get("target", "val_loss")
    if target not in ("val_loss", "train_loss"):
        raise ScalelabError(
            f"config: fit.target: {target} is not measured along a curve; curves fit val_loss or train_loss"
        )
    return target


def read_trajectories(
    results: Path, specs: dict[str, dict], use: list[str] | None, trunk_checkpoints: bool = True
) -> tuple[list[str], list[Trajectory]]:
    """(the runs used, their trajectories with the families' trunks) of a study's results folder."""
    done = finished_runs(results, list(specs))
    if use:
        unknown = [r for r in use if r not in specs]
        if unknown:
            raise ScalelabError(f"--use: {unknown[0]} is not a run of the study's config")
        unfinished = [r for r in use if r not in done]
        if unfinished:
            raise ScalelabError(f"--use: {unfinished[0]} has not finished (no ok metrics.json and curve.csv)")
        used = list(use)
    else:
        used = done
    if not used:
        raise ScalelabError(f"{results}/runs: no finished run with a curve.csv")
    curves = {run_id: read_curve(results / "runs" / run_id / "curve.csv") for run_id in used}
    # The trunks are trained whatever cooldowns are used: their rows also come from the other finished
    # runs' trunk parts and from the trunk checkpoints.
    trunk_parts = {
        run_id: read_curve(results / "runs" / run_id / "curve.csv")
        for run_id in done
        if run_id not in curves and wsd.is_wsd(specs[run_id])
    }
    trajectories = run_trajectories(specs, curves)
    extra = run_trajectories(specs, trunk_parts) if trunk_parts else []
    return used, merge_trunks(trajectories, extra, results / "trunks" if trunk_checkpoints else None)


def merge_trunks(trajectories: list[Trajectory], extra: list[Trajectory], trunks_dir: Path | None) -> list[Trajectory]:
    """The used runs' trajectories, each family's trunk built from every source of its rows."""
    runs = [t for t in trajectories if t.is_run]
    sources: dict[str, list] = {}
    specs: dict[str, dict] = {}
    for traj in trajectories + extra:
        if not traj.is_run:
            family = traj.name.split(" ", 1)[1]
            sources.setdefault(family, []).append(traj.rows)
            specs.setdefault(family, traj.spec)
    for run in runs:
        if wsd.is_wsd(run.spec):
            specs.setdefault(wsd.family_id(run.spec), run.spec)
    trunks = []
    for family, spec in specs.items():
        parts = list(sources.get(family, []))
        if trunks_dir is not None and (ckpt := trunk_checkpoint_rows(trunks_dir, family)) is not None:
            parts.append(usable(ckpt, first_step(spec)))
        if parts and sum(len(p) for p in parts):
            trunks.append(trunk_trajectory(family, spec, parts))
    return runs + trunks


def by_model(trajectories: list[Trajectory]) -> dict[str, list[Trajectory]]:
    out: dict[str, list[Trajectory]] = {}
    for traj in trajectories:
        out.setdefault(traj.model, []).append(traj)
    return out
