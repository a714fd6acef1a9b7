"""The Keras Estimator on the Spark backend, real Spark (local-cluster[2,1,1024],
two workers) and real Keras 3 (the workers on its torch backend, the driver and the
evaluate / predict tasks on TensorFlow's), on scikit-learn's digits."""

import os
import sys

import numpy as np
import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

tf = pytest.importorskip("tensorflow")
pytest.importorskip("torch")

from sparkorca.errors import InvalidArgumentError  # noqa: E402
from sparkorca.learn.tf2 import Estimator  # noqa: E402

pytestmark = pytest.mark.engine

# creators travel by value: executors cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])

shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)


def uncompiled(config):
    import keras
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])


def compile_args(config):
    import keras
    return {"optimizer": keras.optimizers.Adam(config.get("lr", 0.01)),
            "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}


def model_creator(config):
    # an Orca program's creator: tf.keras, compiled there
    model = uncompiled(config)
    model.compile(**compile_args(config))
    return model


COLS = {"feature_cols": ["features"], "label_cols": ["label"]}


def keras_callback_base():
    import keras
    return keras.callbacks.Callback


def test_fit_evaluate_predict_save_load_on_a_dataframe(frames, tmp_path, capsys):
    import keras
    train, test = frames
    est = Estimator.from_keras(model_creator=model_creator, config={"lr": 0.01},
                               model_dir=str(tmp_path / "ckpt"))
    history = est.fit(train, epochs=3, batch_size=64, validation_data=test, **COLS)
    assert history["epochs"] == 3 and len(history["loss"]) == 3
    assert history["num_samples"] == [train.count()] * 3  # every row, every epoch
    assert history["loss"][-1] < history["loss"][0]
    assert len(history["val_accuracy"]) == 3 and "accuracy" in history
    assert "epoch 3:" in capsys.readouterr().out
    # the proof of synchronous training: every worker ends with the same weights
    assert len(est.worker_digests) == 2 and len(set(est.worker_digests)) == 1

    result = est.evaluate(test, batch_size=128, **COLS)
    assert result["validation_accuracy"] >= 0.9, result
    assert result["validation_accuracy"] == pytest.approx(history["val_accuracy"][-1])
    assert result["validation_loss"] == pytest.approx(history["val_loss"][-1], rel=1e-4)

    pred = est.predict(test, feature_cols=["features"]).collect()
    assert [r.id for r in pred] == [r.id for r in test.collect()]  # one per row, in order
    hits = [int(np.argmax(r.prediction)) == r.label for r in pred]
    assert sum(hits) / len(hits) == pytest.approx(result["validation_accuracy"])

    path = str(tmp_path / "model.keras")
    est.save(path)
    again = Estimator.from_keras()  # no creator: the file builds the model
    again.load(path)
    assert again.evaluate(test, batch_size=128, **COLS) == pytest.approx(result)
    assert isinstance(again.get_model(), keras.Model)

    # checkpoints every epoch; resume from one
    assert (tmp_path / "ckpt" / "epoch=2.ckpt").exists()
    resumed = Estimator.from_keras(model_creator=model_creator)
    resumed.load_checkpoint(Estimator.latest_checkpoint(str(tmp_path / "ckpt")))
    more = resumed.fit(train, epochs=4, batch_size=64, initial_epoch=3, verbose=0, **COLS)
    assert len(more["loss"]) == 1 and more["loss"][0] <= history["loss"][-1] * 1.5


def test_shards_and_an_uncompiled_model(digits, shared_sc):
    """Dict Shards; the model compiled by compile_args_creator. Data creators are
    the example program's (tests/test_examples.py)."""
    from sparkorca.data import XShards
    x_train, x_test, y_train, y_test = digits
    est = Estimator.from_keras(model_creator=uncompiled, compile_args_creator=compile_args)
    history = est.fit(XShards.partition({"x": x_train, "y": y_train}, num_shards=2),
                      epochs=3, batch_size=64, verbose=0)
    assert history["num_samples"][-1] == len(y_train)
    assert len(set(est.worker_digests)) == 1
    result = est.evaluate(XShards.partition({"x": x_test, "y": y_test}, num_shards=2))
    assert result["validation_accuracy"] >= 0.85, result


class StopOnRank1(keras_callback_base()):
    """One worker alone asks to stop, after the second epoch."""

    def on_epoch_end(self, epoch, logs=None):
        if os.environ.get("RANK") == "1" and epoch == 1:
            self.model.stop_training = True


class BatchCounter(keras_callback_base()):
    """Counts rank 0's batches through the old-style hook (as TerminateOnNaN has it)."""

    def __init__(self, path):
        super().__init__()
        self.path, self.count = path, 0

    def on_batch_end(self, batch, logs=None):
        self.count += 1

    def on_train_end(self, logs=None):
        if os.environ.get("RANK") == "0":
            with open(self.path, "w") as f:
                f.write(str(self.count))


def test_keras_callbacks_run_on_the_workers_with_the_global_logs(frames, tmp_path):
    """A stop asked by one worker ends every worker after the same epoch, a
    LearningRateScheduler changes every worker's optimizer alike (the weights stay
    identical), batch hooks run, and a file-writing callback (CSVLogger) writes
    once, from rank 0, the global logs."""
    import csv

    import keras
    train, _ = frames
    log, batches = tmp_path / "epochs.csv", tmp_path / "batches"
    est = Estimator.from_keras(model_creator=model_creator)
    callbacks = [StopOnRank1(),
                 keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.02 / (epoch + 1)),
                 keras.callbacks.CSVLogger(str(log)), BatchCounter(str(batches))]
    history = est.fit(train, epochs=5, batch_size=64, verbose=0, callbacks=callbacks, **COLS)
    assert len(history["loss"]) == 2  # stopped after epoch 2 on both workers
    assert len(set(est.worker_digests)) == 1
    assert est.epoch == 2
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [float(r["loss"]) for r in rows] == pytest.approx(history["loss"], rel=1e-5)
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.01)
    assert 0 < int(batches.read_text()) <= 2 * train.count() // 32 + 2  # rank 0's batches

    with pytest.raises(InvalidArgumentError, match="callbacks"):
        est.fit(train, epochs=1, callbacks=["EarlyStopping"], **COLS)
    with pytest.raises(InvalidArgumentError, match="BackupAndRestore"):
        est.fit(train, epochs=1, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))],
                **COLS)
