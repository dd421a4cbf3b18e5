"""The MLflow logger against a real local MLflow tracking store (a file store in a temporary folder)."""

import os

import pytest

from lamina.cli import main

mlflow = pytest.importorskip("mlflow")


def test_lamina_train_logs_params_metrics_plots_and_the_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = "file:" + str(tmp_path / "store")
    run = str(tmp_path / "run")
    assert main(["train", "--model", "mlp", "--epochs", "2", "--run-dir", run, "--mlflow", uri, "--quiet"]) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "lamina"]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    params = found.data.params
    assert params["model"] == "mlp" and params["epochs"] == "2" and params["lr"] == "0.003"
    history = client.get_metric_history(found.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    import json

    records = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [m.value for m in history] == pytest.approx([r["val_accuracy"] for r in records])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"history.png", "metrics.jsonl", "config.json", "confusion.png", "model"} <= artifacts
    model_files = {a.path for a in client.list_artifacts(found.info.run_id, "model")}
    assert "model/lamina_export.json" in model_files
    # a resumed lamina run continues the same MLflow run
    assert main(["train", "--model", "mlp", "--epochs", "3", "--run-dir", run, "--mlflow", uri, "--quiet"]) == 0
    (again,) = client.search_runs([experiment.experiment_id])
    assert again.info.run_id == found.info.run_id
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val_accuracy")] == [1, 2, 3]


def test_without_mlflow_the_option_fails_in_one_line(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    assert main(["train", "--model", "mlp", "--epochs", "1", "--run-dir", str(tmp_path / "r"), "--mlflow", "local",
                 "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == ("lamina: error: the MLflow logger needs the mlflow package: "
                                               "pip install 'lamina[mlflow]'")
