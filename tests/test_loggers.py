"""Experiment-tracker loggers: a few steps of a toy Lightning fit, then read back what each wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from scalelab.errors import ScalelabError
from scalelab.loggers import make_loggers, parse_names

TAGS = {"model": "xs", "N": 12345, "D": 100000, "seed": 0, "study": "toy study"}
EXPERIMENT = "toy study: loggers"


def _fit(loggers, steps=4):
    """A linear model on random data, logging train_loss every step, on the CPU."""
    import lightning.pytorch as pl
    import torch

    class Toy(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1))
    trainer = pl.Trainer(
        max_steps=steps,
        logger=loggers,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Toy(), torch.utils.data.DataLoader(data, batch_size=8))


def _paths(tmp_path):
    root = tmp_path / "results"
    run_dir = root / "runs" / "xs-100K-s0"
    run_dir.mkdir(parents=True)
    return root, run_dir


def test_names_parse_and_unknown_name_is_one_line_error():
    assert parse_names(None) == [] and parse_names("") == []
    assert parse_names("csv, TensorBoard,csv") == ["csv", "tensorboard"]
    assert parse_names(["mlflow", "wandb"]) == ["mlflow", "wandb"]
    with pytest.raises(ScalelabError) as error:
        make_loggers(["csv", "neptune"], "results/runs/r", "r", TAGS, EXPERIMENT)
    message = str(error.value)
    assert "neptune" in message and "csv, tensorboard, mlflow, wandb" in message and "\n" not in message


@pytest.mark.parametrize(
    "name, modules", [("tensorboard", ["tensorboard", "tensorboardX"]), ("mlflow", ["mlflow"]), ("wandb", ["wandb"])]
)
def test_missing_package_names_what_to_install(tmp_path, monkeypatch, name, modules):
    for module in modules:  # None in sys.modules makes the module unimportable
        monkeypatch.setitem(sys.modules, module, None)
    root, run_dir = _paths(tmp_path)
    with pytest.raises(ScalelabError) as error:
        make_loggers(["csv", name], run_dir, "xs-100K-s0", TAGS, EXPERIMENT, root=root)
    message = str(error.value)
    assert f"pip install {modules[0]}" in message and "\n" not in message
    assert not (run_dir / "csv").exists()  # nothing is created before every package is found


def test_csv_logger_writes_metrics_and_tags(tmp_path):
    root, run_dir = _paths(tmp_path)
    _fit(make_loggers("csv", run_dir, "xs-100K-s0", TAGS, EXPERIMENT, root=root))
    import pandas as pd

    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    assert metrics["train_loss"].notna().sum() == 4
    assert yaml.safe_load((run_dir / "csv" / "hparams.yaml").read_text()) == TAGS


def test_tensorboard_end_to_end(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, run_dir = _paths(tmp_path)
    loggers = make_loggers(["tensorboard"], run_dir, "xs-100K-s0", TAGS, EXPERIMENT, root=root)
    _fit(loggers)
    log_dir = root / "tensorboard" / "xs-100K-s0"  # the run's name in `tensorboard --logdir results/tensorboard`
    assert Path(loggers[0].log_dir) == log_dir
    events = list(log_dir.glob("events.out.tfevents.*"))
    assert events, list(root.rglob("*"))
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    assert [event.step for event in accumulator.Scalars("train_loss")] == [0, 1, 2, 3]
    assert yaml.safe_load((log_dir / "hparams.yaml").read_text()) == TAGS


def test_mlflow_end_to_end_local_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # make_loggers opts in to the file store
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory
    root, run_dir = _paths(tmp_path / "study")
    _fit(make_loggers("mlflow", run_dir, "xs-100K-s0", TAGS, EXPERIMENT, root=root))
    store = root / "mlruns"
    assert store.is_dir() and not (tmp_path / "mlruns").exists()
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "xs-100K-s0"
    assert run.info.status == "FINISHED"
    assert {k: run.data.tags[k] for k in TAGS} == {k: str(v) for k, v in TAGS.items()}
    assert {k: run.data.params[k] for k in TAGS} == {k: str(v) for k, v in TAGS.items()}  # N, D, seed: params
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]


def _fit_and_validate(loggers, steps=4):
    """A toy fit, then a separate trainer.validate() with the same loggers (as train_run's final val loss)."""
    import lightning.pytorch as pl
    import torch

    class Toy(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=8
    )
    trainer = pl.Trainer(
        max_steps=steps,
        logger=loggers,
        log_every_n_steps=1,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = Toy()
    trainer.fit(module, loader)
    trainer.validate(module, loader, verbose=False)


SPEC = {
    "model": "xs",
    "tokens": 100_000,
    "seed": 0,
    "lr": 3e-3,
    "batch_size": 8,
    "context": 64,
    "schedule": "wsd",
    "cooldown": 0.2,
    "run": "xs-100K-s0",
}
EVAL = {
    "test_loss": 3.25,
    "test_ppl": 25.8,
    "test_bpb": 1.5,
    "bleu": 12.0,
    "rouge1": 0.4,
    "rouge2": 0.2,
    "rougeL": 0.35,
    "test_tokens": 5092,
}


def _track(run_dir, loggers, times=2):
    """`scalelab track` on the run (as the workflow's track job), `times` times: a rerun adds nothing."""
    import json

    from scalelab import cli

    (run_dir / "eval.json").write_text(json.dumps({"run": run_dir.name, "status": "ok", **EVAL}))
    (run_dir / "metrics.json").write_text(json.dumps({"run": run_dir.name, "status": "ok", "steps": 4}))
    out = run_dir.parent.parent / "trackers.json"
    for _ in range(times):
        assert cli.main(["track", "--loggers", loggers, "--study", EXPERIMENT, "--out", str(out), str(run_dir)]) == 0
    return json.loads(out.read_text())


def test_tracker_tags_carry_the_trained_token_count_and_the_settings():
    from scalelab.loggers import tracker_tags

    tags = tracker_tags(SPEC, 12345, 100_352, "toy study")
    assert tags["D"] == 100_352 and tags["D_requested"] == 100_000 and tags["N"] == 12345
    assert tags["lr"] == 3e-3 and tags["schedule"] == "wsd" and tags["cooldown"] == 0.2


def test_tensorboard_one_event_file_hparams_plugin_and_evaluation(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from scalelab.loggers import tracker_tags

    root, run_dir = _paths(tmp_path)
    tags = tracker_tags(SPEC, 12345, 100_352, EXPERIMENT)
    _fit_and_validate(make_loggers(["tensorboard"], run_dir, "xs-100K-s0", tags, EXPERIMENT, root=root))
    assert _track(run_dir, "csv,tensorboard", times=1)["runs"] == {"xs-100K-s0": ["tensorboard"]}
    assert _track(run_dir, "csv,tensorboard", times=1)["runs"] == {"xs-100K-s0": []}  # there already
    log_dir = root / "tensorboard" / "xs-100K-s0"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1  # training, final validation and evaluation
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    scalars = accumulator.Tags()["scalars"]
    assert "epoch" not in scalars and {"train_loss", "val_loss", "test_loss", "test_bpb", "bleu", "rougeL"} <= set(
        scalars
    )
    assert [(e.step, e.value) for e in accumulator.Scalars("test_loss")] == [(4, 3.25)]
    # The HParams plugin: the run's hyperparameters (N, D, lr, ...) and the metrics its tab compares.
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["N"].number_value == 12345 and start.hparams["D"].number_value == 100_352
    assert start.hparams["lr"].number_value == pytest.approx(3e-3) and start.hparams["model"].string_value == "xs"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} >= {"val_loss", "test_loss", "test_bpb", "bleu", "rougeL"}


def test_mlflow_run_gets_the_evaluation_and_the_trained_tokens(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from scalelab.loggers import log_evaluation, mlflow_store, tracker_tags

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)
    root, run_dir = _paths(tmp_path / "study")
    tags = tracker_tags(SPEC, 12345, 100_352, EXPERIMENT)
    _fit(make_loggers("mlflow", run_dir, "xs-100K-s0", tags, EXPERIMENT, root=root))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # a fresh track process: set again for it
    assert _track(run_dir, "mlflow")["runs"] == {"xs-100K-s0": []}  # the second time: logged by the first
    client = MlflowClient(tracking_uri=mlflow_store(root))
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert len(runs) == 1  # the training's run, not a new one
    data = runs[0].data
    assert data.tags["D"] == "100352" and data.tags["D_requested"] == "100000" and data.tags["lr"] == "0.003"
    assert data.metrics["test_loss"] == 3.25 and data.metrics["rougeL"] == 0.35 and "train_loss" in data.metrics
    assert [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "test_loss")] == [(4, 3.25)]
    # A run trained without MLflow: a line on stderr, nothing created.
    assert log_evaluation(["mlflow"], "s-100K-s0", EVAL, 4, EXPERIMENT, root) == []
