"""Experiment-tracker loggers for a training run: `make_loggers(...)` gives Lightning loggers.

    csv          results/runs/{run}/csv/metrics.csv (+ hparams.yaml with the tags); always available
    tensorboard  results/tensorboard/{run}/ event files: `tensorboard --logdir results/tensorboard`
    mlflow       a local file store, results/mlruns: `MLFLOW_ALLOW_FILE_STORE=true mlflow ui
                 --backend-store-uri results/mlruns`; one experiment per study (its title), one
                 MLflow run per training run (a resumed run starts a new MLflow run)
    wandb        offline, under results/wandb: `wandb sync results/wandb/offline-run-*` uploads later

Every logger names the run by its run id and carries the tags (`tracker_tags`: model, N, D as
trained, seed, study, lr and every other sweepable train setting): as MLflow run tags, as W&B
tags and config, and as hyperparameters for CSV and TensorBoard (hparams.yaml and the HParams
plugin's events, so its HParams tab compares runs). The evaluation's metrics join the same run
(`log_evaluation`, run by `scalelab track`, the workflow's `track` job, once every run is
evaluated): TensorBoard's run folder (appended to the training's one event file) and the training's
MLflow run. Nothing here reaches the network. tensorboard, mlflow and wandb are optional packages
(the `trackers` extra has the first two, the `wandb` extra the third); asking for one that is not
installed is a one-line ScalelabError naming what to install.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from .errors import ScalelabError

LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")
# What the evaluation adds to a run's tracker (eval.json's keys), and the metrics TensorBoard's
# HParams tab lists for each run.
EVAL_METRICS = ("test_loss", "test_ppl", "test_bpb", "bleu", "rouge1", "rouge2", "rougeL")
HPARAM_METRICS = ("val_loss", "test_loss", "test_bpb", "bleu", "rougeL")
# train settings a run's tags carry (besides model, N, D, seed): those a sweep may vary
TAGGED_SETTINGS = (
    "lr",
    "batch_size",
    "context",
    "schedule",
    "warmup_tokens",
    "min_lr_ratio",
    "weight_decay",
    "beta2",
    "grad_clip",
    "precision",
    "cooldown",
    "cooldown_shape",
)
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
        raise ScalelabError(
            f"the {name} logger needs the {package} package: pip install {package} (or pip install 'scalelab[{extra}]')"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tracker_tags(spec: dict, params: int, tokens_trained: int, study: str) -> dict:
    """What names a run in every tracker: model, N, D as trained (whole steps; the spec's request
    is D_requested), seed, study and the train settings a sweep may vary."""
    tags = {
        "model": spec["model"],
        "N": int(params),
        "D": int(tokens_trained),
        "D_requested": int(spec["tokens"]),
        "seed": spec["seed"],
        "study": study,
    }
    tags.update({key: spec[key] for key in TAGGED_SETTINGS if key in spec})
    return tags


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
            logger = _tensorboard_logger(root, run_id)
            logger.log_hyperparams(tags)
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            logger = MLFlowLogger(
                experiment_name=experiment, run_name=run_id, tracking_uri=mlflow_store(root), tags=_string_tags(tags)
            )
            logger.log_hyperparams(tags)  # as params too: MLflow compares and filters runs by params
        else:  # wandb
            from lightning.pytorch.loggers import WandbLogger

            os.environ.setdefault("WANDB_MODE", "offline")
            save_dir = root / "wandb"
            save_dir.mkdir(parents=True, exist_ok=True)
            logger = WandbLogger(
                name=run_id,
                project=_wandb_project(experiment),
                save_dir=str(save_dir),
                offline=True,
                tags=[f"{k}={v}" for k, v in _string_tags(tags).items()],
                config=tags,
            )
        loggers.append(logger)
    return loggers


def mlflow_store(root) -> str:
    """The study's MLflow file store (results/mlruns) as a tracking URI, created.

    A file store, not MLflow's recommended SQLite: training jobs run in parallel, often on a
    shared filesystem, where one SQLite file locks. MLflow 3 keeps the file store working but in
    maintenance mode, and raises unless MLFLOW_ALLOW_FILE_STORE=true, which is set here for the
    user (reading the store with `mlflow ui` needs it too: README)."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (Path(root) / "mlruns").resolve()
    store.mkdir(parents=True, exist_ok=True)
    return store.as_uri()


def _tensorboard_logger(root: Path, run_id: str):
    """Lightning's TensorBoardLogger, made to write one event file per run with no `epoch`
    scalar (the data loader's epochs are checkpoint intervals, not passes over the data) and the
    hyperparameters as HParams plugin events."""
    from lightning.pytorch.loggers import TensorBoardLogger

    class RunTensorBoard(TensorBoardLogger):
        def log_metrics(self, metrics, step=None):
            super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)

        def log_hyperparams(self, params, metrics=None):
            super().log_hyperparams(params)  # hparams.yaml
            from torch.utils.tensorboard.summary import hparams

            values = {k: v for k, v in params.items() if isinstance(v, (bool, int, float, str))}
            for summary in hparams(values, {name: 0.0 for name in HPARAM_METRICS}):
                self.experiment._get_file_writer().add_summary(summary)

        def finalize(self, status):
            # Flush, not close: a final trainer.validate() after fit would otherwise open a
            # second event file for the same run.
            self.experiment.flush()
            self.save()

    return RunTensorBoard(save_dir=str(root / "tensorboard"), name=run_id, version="", default_hp_metric=False)


def log_evaluation(names, run_id: str, metrics: dict, step: int | None, experiment: str, root) -> list[str]:
    """Add the evaluation's metrics to the run's trackers, where its training logged: TensorBoard
    (results/tensorboard/<run>, appended to its event file) and MLflow (the training's run, found
    by name in the study's experiment). csv has them in eval.json; W&B's offline runs are closed
    files, so it gets none. Returns what was logged to, for the log."""
    values = {k: float(metrics[k]) for k in EVAL_METRICS if isinstance(metrics.get(k), (int, float))}
    done = []
    if not values:
        return done
    root = Path(root)
    for name in parse_names(names):
        if name == "tensorboard":
            _require(name)
            _append_tensorboard(root / "tensorboard" / run_id, values, step or 0)
            done.append("tensorboard")
        elif name == "mlflow":
            _require(name)
            if _log_mlflow(root, run_id, values, step or 0, experiment):
                done.append("mlflow")
    return done


def _append_tensorboard(log_dir: Path, values: dict, step: int) -> None:
    """Scalars appended to the run's event file (TFRecord files are a sequence of framed records,
    so appending keeps them valid), or a new one when training logged none there."""
    import time

    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    events = sorted(log_dir.glob("events.out.tfevents.*"))
    if not events:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(log_dir)) as writer:
            for key, value in values.items():
                writer.add_scalar(key, value, step)
        return
    summary = Summary(value=[Summary.Value(tag=key, simple_value=value) for key, value in values.items()])
    with open(events[-1], "ab") as handle:
        RecordWriter(handle).write(Event(wall_time=time.time(), step=step, summary=summary).SerializeToString())


def _log_mlflow(root: Path, run_id: str, values: dict, step: int, experiment: str) -> bool:
    """The metrics on the latest MLflow run named `run_id` in the study's experiment; False (and
    a line on stderr) when training logged no such run."""
    import sys

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store(root))
    found = client.get_experiment_by_name(experiment)
    runs = (
        []
        if found is None
        else client.search_runs(
            [found.experiment_id],
            filter_string=f"attributes.run_name = '{run_id}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    )
    if not runs:
        print(
            f"mlflow: no run named {run_id} in experiment {experiment!r} (was it trained with the mlflow logger?); "
            "the evaluation is in eval.json only",
            file=sys.stderr,
        )
        return False
    for key, value in values.items():
        client.log_metric(runs[0].info.run_id, key, value, step=step)
    return True


# ----------------------------------------------------------------------------- scalelab track


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (results/runs/{run}) with an eval.json")
    parser.add_argument("--loggers", default="", help="the trackers the runs trained with (train.logger)")
    parser.add_argument("--study", default="scalelab study", help="the study's title (the MLflow experiment)")
    parser.add_argument("--out", type=Path, default=None, help="a JSON record of what was logged (the rule's output)")


def _already_logged(name: str, root: Path, run_id: str, experiment: str) -> bool:
    """Whether the run's tracker holds an evaluation already (a rerun of `track` adds none twice)."""
    if name == "tensorboard":
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        for path in sorted((root / "tensorboard" / run_id).glob("events.out.tfevents.*")):
            for event in EventFileLoader(str(path)).Load():
                if any(value.tag == "test_loss" for value in event.summary.value):
                    return True
        return False
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store(root))
    found = client.get_experiment_by_name(experiment)
    runs = (
        []
        if found is None
        else client.search_runs(
            [found.experiment_id],
            filter_string=f"attributes.run_name = '{run_id}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    )
    return bool(runs) and "test_loss" in runs[0].data.metrics


def run(args) -> None:
    """`scalelab track`: each evaluated run's metrics to the trackers it trained with."""
    import json

    from .files import write_json

    names = [n for n in parse_names(args.loggers) if n in ("tensorboard", "mlflow")]
    for name in names:
        _require(name)
    record = {}
    for run_dir in args.runs:
        path = run_dir / "eval.json"
        try:
            evaluation = json.loads(path.read_text())
            metrics = json.loads((run_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            continue  # not evaluated (a failed or missing run): nothing to log
        if not isinstance(evaluation, dict) or evaluation.get("status") != "ok":
            continue
        run_id, root = str(evaluation.get("run") or run_dir.name), run_dir.parent.parent
        wanted = [n for n in names if not _already_logged(n, root, run_id, args.study)]
        done = log_evaluation(wanted, run_id, evaluation, int(metrics.get("steps") or 0), args.study, root)
        record[run_id] = done
        if done:
            print(f"{run_id}: evaluation logged to {', '.join(done)}")
    if args.out is not None:
        write_json(args.out, {"loggers": names, "runs": record})
