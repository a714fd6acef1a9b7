"""The PyTorch Estimator on the Spark backend, real Spark (local-cluster[2,1,1024],
two workers under DDP) and real torch, on scikit-learn's digits."""

import json
import sys

import numpy as np
import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

from sparkorca.errors import InvalidArgumentError, OrcaRuntimeError
from sparkorca.node.host import node_ip

torch = pytest.importorskip("torch")
nn = torch.nn

from sparkorca.learn.metrics import Accuracy  # noqa: E402
from sparkorca.learn.pytorch import Estimator  # noqa: E402
from sparkorca.learn.pytorch.callbacks import (  # noqa: E402
    Callback,
    MainCallback,
    ModelCheckpoint,
)

pytestmark = pytest.mark.engine

# creators travel by value: executors cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])

shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)


COLS = {"feature_cols": ["features"], "label_cols": ["label"]}


def model_creator(config):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def optimizer_creator(model, config):
    return torch.optim.Adam(model.parameters(), lr=config.get("lr", 0.01))


def estimator(**kwargs):
    return Estimator.from_torch(model=model_creator, optimizer=optimizer_creator,
                                loss=nn.CrossEntropyLoss(), metrics=[Accuracy()],
                                config={"lr": 0.01}, **kwargs)


def test_fit_evaluate_predict_save_load_on_a_dataframe(frames, tmp_path, capsys):
    train, test = frames
    est = estimator(model_dir=str(tmp_path / "ckpt"))
    stats = est.fit(train, epochs=3, batch_size=64, feature_cols=["features"],
                    label_cols=["label"], validation_data=test)
    assert [s["epoch"] for s in stats] == [1, 2, 3]
    assert all(s["num_samples"] == train.count() for s in stats)  # each epoch, all rows
    assert stats[-1]["train_loss"] < stats[0]["train_loss"]
    assert stats[-1]["val_num_samples"] == test.count()
    printed = capsys.readouterr().out
    assert "epoch 3:" in printed and "samples/s" in printed

    result = est.evaluate(test, batch_size=128, feature_cols=["features"], label_cols=["label"])
    assert result["num_samples"] == test.count()
    assert result["Accuracy"] >= 0.9, result
    assert result["Accuracy"] == pytest.approx(stats[-1]["val_accuracy"])

    pred = est.predict(test, feature_cols=["features"]).collect()
    ids = [r.id for r in test.collect()]
    assert [r.id for r in pred] == ids  # one per row, in the input's order
    hits = [int(np.argmax(r.prediction)) == r.label for r in pred]
    assert sum(hits) / len(hits) == pytest.approx(result["Accuracy"])

    path = str(tmp_path / "model.pt")
    est.save(path)
    again = estimator()
    again.load(path)
    assert again.evaluate(test, batch_size=128, feature_cols=["features"],
                          label_cols=["label"]) == result
    model = again.get_model()
    assert isinstance(model, nn.Module)

    # checkpoints every epoch; resume from one
    last = Estimator.latest_checkpoint(str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "epoch=2.ckpt").exists()
    resumed = estimator()
    resumed.load_checkpoint(last)
    more = resumed.fit(train, epochs=4, batch_size=64, feature_cols=["features"],
                       label_cols=["label"], initial_epoch=3)
    assert [s["epoch"] for s in more] == [4]


def test_shards_and_data_creators(frames, digits, shared_sc):
    from sparkorca.data import XShards
    x_train, x_test, y_train, y_test = digits
    train = XShards.partition({"x": x_train.astype(np.float32), "y": y_train}, num_shards=2)
    test = XShards.partition({"x": x_test.astype(np.float32), "y": y_test}, num_shards=2)
    est = estimator()
    stats = est.fit(train, epochs=2, batch_size=64)
    assert stats[-1]["num_samples"] == len(y_train)
    result = est.evaluate(test)
    assert result["Accuracy"] >= 0.85, result
    pred = est.predict(XShards.partition({"x": x_test.astype(np.float32)}, num_shards=2))
    out = np.concatenate([s["prediction"] for s in pred.collect()])
    assert out.shape == (len(y_test), 10)
    assert np.mean(out.argmax(axis=1) == y_test) == pytest.approx(result["Accuracy"])

    def loader(config, batch_size):
        data = torch.utils.data.TensorDataset(torch.tensor(x_train, dtype=torch.float32),
                                              torch.tensor(y_train))
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    by_creator = estimator()
    stats = by_creator.fit(loader, epochs=2, batch_size=64, validation_data=loader)
    assert stats[-1]["val_num_samples"] == len(y_train)  # every sample once
    assert stats[-1]["val_accuracy"] >= 0.85, stats[-1]
    # evaluate(creator) runs on the workers, each its share: the same figures
    evaluated = by_creator.evaluate(loader)
    assert evaluated["num_samples"] == len(y_train)
    assert evaluated["Accuracy"] == pytest.approx(stats[-1]["val_accuracy"])


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)

    def forward(self, x):
        raise ValueError("the model failed on purpose")


def test_a_worker_exception_fails_fit_with_its_traceback(frames):
    train, _ = frames
    est = Estimator.from_torch(model=lambda config: Exploding(), optimizer=optimizer_creator,
                               loss=nn.CrossEntropyLoss())
    with pytest.raises(OrcaRuntimeError, match="failed on purpose") as info:
        est.fit(train, epochs=2, feature_cols=["features"], label_cols=["label"])
    assert "Traceback" in str(info.value)


def test_bad_columns_fail_before_any_job(frames):
    train, _ = frames
    est = estimator()
    with pytest.raises(InvalidArgumentError, match="feature_cols"):
        est.fit(train, epochs=1)
    with pytest.raises(InvalidArgumentError, match="'nope'"):
        est.fit(train, feature_cols=["nope"], label_cols=["label"])
    with pytest.raises(InvalidArgumentError, match="workers_per_node"):
        estimator(workers_per_node=4).fit(train, feature_cols=["features"],
                                          label_cols=["label"])


class ListenLog(Callback):
    """Each worker writes the TCP addresses its process listens on, mid-fit."""

    def __init__(self, path):
        self.path = path

    def after_train_epoch(self, runner):
        import psutil
        proc = psutil.Process()
        conns = proc.net_connections("tcp") if hasattr(proc, "net_connections") \
            else proc.connections("tcp")
        with open(f"{self.path}-{runner.rank}", "w") as f:
            json.dump([c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN], f)


class HookLog(Callback):
    """Rank 0 appends each epoch-level hook and the runner's epoch count to a file;
    rank 1 asks to stop during the second epoch."""

    def __init__(self, path):
        self.path = path

    def _log(self, runner, hook):
        if runner.rank == 0:
            with open(self.path, "a") as f:
                f.write(f"{hook} {runner.epochs}\n")

    def before_run(self, runner):
        self._log(runner, "before_run")
        print(f"rank {runner.rank} starts")  # log_to_driver shows it on the driver

    def before_train_epoch(self, runner):
        self._log(runner, "before_train_epoch")

    def after_val_epoch(self, runner):
        self._log(runner, "after_val_epoch")

    def after_train_epoch(self, runner):
        self._log(runner, "after_train_epoch")
        assert runner.epoch_stats["epoch"] == runner.epochs

    def after_train_iter(self, runner):
        # one worker alone stops, in the middle of the second epoch: every worker
        # must end after that epoch (none left waiting in an all-reduce)
        if runner.rank == 1 and runner.epochs == 1 and runner.batch_idx == 2:
            runner.stop = True

    def after_run(self, runner):
        self._log(runner, "after_run")


class NoStep(MainCallback):
    """A replaced training step: backward (DDP's gradient sync needs it) but no
    optimizer step, so the weights stay as they were."""

    def on_iter_backward(self, runner):
        runner.optimizer.zero_grad()
        runner.loss.backward()


def test_orca_callbacks_run_on_the_workers(frames, tmp_path, capsys):
    train, test = frames
    log = tmp_path / "hooks.txt"
    est = estimator()
    stats = est.fit(train, epochs=5, batch_size=64, validation_data=test,
                    callbacks=[HookLog(str(log)),
                               ModelCheckpoint(str(tmp_path / "ckpt" / "digits-{epoch}")),
                               ListenLog(str(tmp_path / "listen"))],
                    **COLS)
    assert [s["epoch"] for s in stats] == [1, 2]  # stopped on every worker after epoch 2
    assert est.epoch == 2
    printed = capsys.readouterr().out
    assert "(worker 0) rank 0 starts" in printed and "(worker 1) rank 1 starts" in printed
    assert log.read_text().split("\n")[:-1] == [
        "before_run 0", "before_train_epoch 0", "after_val_epoch 0", "after_train_epoch 1",
        "before_train_epoch 1", "after_val_epoch 1", "after_train_epoch 2", "after_run 2"]
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == \
        {"digits-epoch=1.ckpt", "digits-epoch=2.ckpt", "last.ckpt"}  # Orca's names
    # mid-fit only the group's store listens (rank 0), on the node's address (torch's
    # TCPStore: every interface); the workers' mesh closed its listeners once
    # connected, and no gloo pair listens (learn.process_group)
    listening = {r: json.loads((tmp_path / f"listen-{r}").read_text()) for r in (0, 1)}
    assert listening == {0: [node_ip()], 1: []}, listening
    again = estimator()
    again.load_checkpoint(str(tmp_path / "ckpt" / "last.ckpt"))
    assert again.evaluate(test, **COLS) == est.evaluate(test, **COLS)

    before = est.evaluate(test, **COLS)
    est.fit(train, epochs=1, batch_size=64, callbacks=[NoStep()], **COLS)
    assert est.evaluate(test, **COLS) == before  # the MainCallback's step was the one run


class PeakRss(Callback):
    """Each worker writes its peak RSS (VmHWM) at the end of fit."""

    def __init__(self, out):
        self.out = out

    def after_run(self, runner):
        import json
        import os
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        with open(os.path.join(self.out, f"rank-{runner.rank}.json"), "w") as f:
            json.dump({"peak_mb": kb / 1024, "rows": runner.epoch_stats["num_samples"]}, f)


def wide_rows(batches):
    """150,000 rows of 256 float32 features (~150 MB) for each input row."""
    import pyarrow as pa
    for b in batches:
        for seed in b.column(0).to_pylist():
            rng = np.random.default_rng(seed)
            for _ in range(15):
                x = rng.random((10000, 256), dtype=np.float32)
                yield pa.RecordBatch.from_arrays(
                    [pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 256)
                     .cast(pa.list_(pa.float32())), pa.array((x[:, 0] * 10).astype(np.int64))],
                    names=["features", "label"])


def test_disk_2_keeps_a_workers_peak_rss_below_drams_for_3_epochs(shared_sc, tmp_path):
    from sparkorca import OrcaContext
    spark = OrcaContext.get_spark_session()
    # one 150 MB partition per worker, computed once per fit and replayed from the store
    data = spark.range(0, 2, numPartitions=2).mapInArrow(
        wide_rows, "features array<float>, label long")
    peaks = {}
    try:
        for store in ("DRAM", "DISK_2"):
            OrcaContext.train_data_store = store
            out = tmp_path / store
            out.mkdir()
            est = Estimator.from_torch(model=lambda config: nn.Linear(256, 10),
                                       optimizer=optimizer_creator, loss=nn.CrossEntropyLoss())
            stats = est.fit(data, epochs=3, batch_size=4096, callbacks=[PeakRss(str(out))],
                            **COLS)
            assert [s["num_samples"] for s in stats] == [300000] * 3
            peaks[store] = max(json.loads(p.read_text())["peak_mb"] for p in out.iterdir())
    finally:
        OrcaContext.train_data_store = "DRAM"
    print("a worker's peak RSS, MB:", peaks)
    # DRAM holds the worker's whole first epoch (~150 MB); DISK_2 half of it at a time
    # (measured: 558 vs 508 MB)
    assert peaks["DRAM"] - peaks["DISK_2"] > 25, peaks
