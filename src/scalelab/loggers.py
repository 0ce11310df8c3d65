"""Experiment-tracker loggers for a training run: `make_loggers(...)` gives Lightning loggers.

    csv          results/runs/{run}/csv/metrics.csv (+ hparams.yaml with the tags); always available
    tensorboard  results/tensorboard/{run}/ event files: `tensorboard --logdir results/tensorboard`
    mlflow       a local file store, results/mlruns: `MLFLOW_ALLOW_FILE_STORE=true mlflow ui
                 --backend-store-uri results/mlruns`; one experiment per study (its title), one
                 MLflow run per training run (a resumed run starts a new MLflow run)
    wandb        offline, under results/wandb: `wandb sync results/wandb/offline-run-*` uploads later

Every logger names the run by its run id and carries the tags (model, N, D, seed, study): as
MLflow run tags, as W&B tags and config, and as hyperparameters for CSV and TensorBoard. Nothing
here reaches the network. tensorboard, mlflow and wandb are optional packages (the `trackers`
extra has the first two, the `wandb` extra the third); asking for one that is not installed is a one-line ScalelabError naming what to install.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from .errors import ScalelabError

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")
# logger name -> (importable modules, any one will do; what to install; the scalelab extra with it)
_NEEDS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard", "trackers"),
    "mlflow": (("mlflow",), "mlflow", "trackers"),  # mlflow-skinny (the extra's choice) provides it too
    "wandb": (("wandb",), "wandb", "wandb"),
}


def logger_names(config: dict) -> list[str]:
    """train.logger as a list of names (a string is one name)."""
    names = config["train"]["logger"]
    return [names] if isinstance(names, str) else list(names)


def parse_names(names) -> list[str]:
    """`None`, "csv", "csv,tensorboard" or a list of names -> a list of known names, in order, once each."""
    if names is None:
        return []
    items = names.split(",") if isinstance(names, str) else list(names)
    parsed = []
    for item in items:
        name = str(item).strip().lower()
        if not name:
            continue
        if name not in LOGGERS:
            raise ScalelabError(f"unknown logger {str(item).strip()!r} (choose from {', '.join(LOGGERS)})")
        if name not in parsed:
            parsed.append(name)
    return parsed


def check_available(names) -> None:
    """One line naming the package to install for the first requested logger that lacks one."""
    for name in parse_names(names):
        if name in _NEEDS:
            _require(name)


def _require(name: str) -> None:
    modules, package, extra = _NEEDS[name]
    if not any(_installed(module) for module in modules):
        raise ScalelabError(f"the {name} logger needs the {package} package: pip install {package} "
                            f"(or pip install 'scalelab[{extra}]')")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _string_tags(tags: dict) -> dict[str, str]:
    return {str(key): "" if value is None else str(value) for key, value in (tags or {}).items()}


def _wandb_project(experiment: str) -> str:
    # W&B project names may not contain / \ # ? % :
    return re.sub(r"[/\\#?%:]+", "-", experiment).strip() or "scalelab"


def make_loggers(names, run_dir, run_id: str, tags: dict, experiment: str, root=None) -> list:
    """Lightning loggers for one run.

    names: one of `csv | tensorboard | mlflow | wandb`, a comma-separated string or a list
        (empty or None: no loggers);
    run_dir: the run's folder (`results/runs/{run}`); run_id: the run's name in every tracker;
    tags: what identifies the run (model, N, D, seed, study); experiment: the study title
        (MLflow experiment, W&B project);
    root: the study's `results/` folder, where the TensorBoard, MLflow and W&B stores live
        (default: two levels above run_dir).
    """
    wanted = parse_names(names)
    for name in wanted:  # every missing package is reported before anything is created
        if name in _NEEDS:
            _require(name)
    run_dir = Path(run_dir)
    root = Path(root) if root is not None else run_dir.parent.parent
    tags = dict(tags or {})
    loggers = []
    for name in wanted:
        if name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(save_dir=str(run_dir), name="csv", version="")
            logger.log_hyperparams(tags)
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            logger = TensorBoardLogger(save_dir=str(root / "tensorboard"), name=run_id, version="",
                                       default_hp_metric=False)
            logger.log_hyperparams(tags)
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            # A file store, not MLflow's recommended SQLite: training jobs run in parallel, often on a
            # shared filesystem, where one SQLite file locks. MLflow 3 keeps the file store working
            # but in maintenance mode, and raises unless this opt-out is set.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            store = (root / "mlruns").resolve()
            store.mkdir(parents=True, exist_ok=True)
            logger = MLFlowLogger(experiment_name=experiment, run_name=run_id, tracking_uri=store.as_uri(),
                                  tags=_string_tags(tags))
        else:  # wandb
            from lightning.pytorch.loggers import WandbLogger

            os.environ.setdefault("WANDB_MODE", "offline")
            save_dir = root / "wandb"
            save_dir.mkdir(parents=True, exist_ok=True)
            logger = WandbLogger(name=run_id, project=_wandb_project(experiment), save_dir=str(save_dir),
                                 offline=True, tags=[f"{k}={v}" for k, v in _string_tags(tags).items()],
                                 config=tags)
        loggers.append(logger)
    return loggers
