"""Both Estimators on the "ray" backend: real Spark (local-cluster[2,1,1024]) with
RayOnSpark started on demand (a Ray node per executor), the workers as Ray actors
joined in sparkorca's process group, real torch and Keras 3, on scikit-learn's
digits; DataFrames, Shards and Ray Datasets in, a Ray Dataset out of predict."""

import sys

import numpy as np
import psutil
import pytest
from conftest import QUIET, shared_context
from pyspark import cloudpickle

from sparkorca._wait import wait_for
from sparkorca.errors import InvalidArgumentError, OrcaRuntimeError

torch = pytest.importorskip("torch")
nn = torch.nn

from sparkorca.learn.metrics import Accuracy  # noqa: E402
from sparkorca.learn.pytorch import Estimator  # noqa: E402

pytestmark = pytest.mark.engine

# creators travel by value: the workers cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# the Spark-backend modules' context: Ray is started on it on demand (as
# Estimator(backend="ray") does), here once for the module, before any test's leak check
shared_sc = shared_context(cluster_mode="local-cluster", num_nodes=2, cores=1, memory="1g",
                           conf=QUIET)


@pytest.fixture(scope="module", autouse=True)
def ray_on_spark(shared_sc):
    from sparkorca import OrcaContext
    return OrcaContext.get_ray_context()
COLS = {"feature_cols": ["features"], "label_cols": ["label"]}


def model_creator(config):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def optimizer_creator(model, config):
    return torch.optim.Adam(model.parameters(), lr=0.01)


def torch_estimator(**kwargs):
    return Estimator.from_torch(model=model_creator, optimizer=optimizer_creator,
                                loss=nn.CrossEntropyLoss(), metrics=[Accuracy()],
                                backend="ray", **kwargs)


@pytest.fixture(scope="module")
def test_dataset(digits, shared_sc):
    """The digits' test rows as a Ray Dataset (id, features, label) of two blocks,
    in order."""
    import pyarrow as pa
    import ray
    _, x_test, _, y_test = digits
    table = pa.table({"id": np.arange(len(y_test)),
                      "features": list(x_test.astype(np.float32)), "label": y_test})
    half = len(y_test) // 2
    return ray.data.from_arrow([table.slice(0, half), table.slice(half)])


def test_torch_trains_on_ray_from_a_dataframe_and_a_ray_dataset(frames, test_dataset, digits,
                                                                 tmp_path, capsys):
    import ray
    train, test = frames
    est = torch_estimator(model_dir=str(tmp_path / "ckpt"))
    stats = est.fit(train, epochs=3, batch_size=64, validation_data=test, **COLS)
    assert [s["epoch"] for s in stats] == [1, 2, 3]
    assert all(s["num_samples"] == train.count() for s in stats)  # each epoch, all rows
    assert stats[-1]["train_loss"] < stats[0]["train_loss"]
    assert stats[-1]["val_num_samples"] == test.count()
    assert "epoch 3:" in capsys.readouterr().out
    assert (tmp_path / "ckpt" / "epoch=3.ckpt").exists()

    result = est.evaluate(test, batch_size=128, **COLS)
    assert result["Accuracy"] >= 0.9, result
    assert result["Accuracy"] == pytest.approx(stats[-1]["val_accuracy"])
    # a Ray Dataset: evaluated by Ray tasks, the same figures
    on_ray = est.evaluate(test_dataset, batch_size=128, **COLS)
    assert on_ray["num_samples"] == result["num_samples"]
    assert on_ray["Accuracy"] == pytest.approx(result["Accuracy"])

    pred = est.predict(test_dataset, feature_cols=["features"])
    assert isinstance(pred, ray.data.Dataset)
    rows = pred.take_all()
    assert [r["id"] for r in rows] == list(range(test.count()))  # one per row, in order
    hits = np.mean([int(np.argmax(r["prediction"])) == r["label"] for r in rows])
    assert hits == pytest.approx(result["Accuracy"])

    _, x_test, _, y_test = digits

    def loader(config, batch_size):  # a data creator: evaluated by the workers
        data = torch.utils.data.TensorDataset(torch.tensor(x_test, dtype=torch.float32),
                                              torch.tensor(y_test))
        return torch.utils.data.DataLoader(data, batch_size=batch_size)
    by_workers = est.evaluate(loader)
    assert by_workers["num_samples"] == len(y_test)
    assert by_workers["Accuracy"] == pytest.approx(result["Accuracy"])

    more = est.fit(test_dataset, epochs=1, batch_size=64, **COLS)  # a Ray Dataset trains too
    assert [s["epoch"] for s in more] == [4]
    assert more[0]["num_samples"] == test.count()


def test_keras_trains_on_ray_with_identical_weights(frames, digits):
    """Shards reach the workers through the object store; the DataFrame path is
    the PyTorch test's."""
    pytest.importorskip("tensorflow")
    from test_estimator_keras import model_creator as keras_model

    from sparkorca.data import XShards
    from sparkorca.learn.tf2 import Estimator as KerasEstimator
    x_train, _, y_train, _ = digits
    _, test = frames
    est = KerasEstimator.from_keras(model_creator=keras_model, backend="ray")
    history = est.fit(XShards.partition({"x": x_train, "y": y_train}, num_shards=3),
                      epochs=3, batch_size=64, verbose=0)
    assert history["num_samples"] == [len(y_train)] * 3
    assert len(est.worker_digests) == 2 and len(set(est.worker_digests)) == 1
    result = est.evaluate(test, batch_size=128, **COLS)
    assert result["validation_accuracy"] >= 0.9, result


class RankOneExploding(nn.Module):
    """Trains on rank 0; fails on rank 1 in its second step (after one exchange)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 10)
        self.steps = 0

    def forward(self, x):
        self.steps += 1
        if torch.distributed.get_rank() == 1 and self.steps == 2:
            raise ValueError("rank 1 failed on purpose")
        return self.lin(x)


def test_a_ray_worker_exception_fails_fit_and_leaves_no_actor(frames):
    import ray
    from test_estimator import Exploding
    train, _ = frames
    est = Estimator.from_torch(model=lambda config: Exploding(), optimizer=optimizer_creator,
                               loss=nn.CrossEntropyLoss(), backend="ray")
    with pytest.raises(OrcaRuntimeError, match="failed on purpose") as info:
        est.fit(train, epochs=2, **COLS)
    assert "worker" in str(info.value) and "in forward" in str(info.value)  # its traceback
    # one worker fails, its partner sees the gradient exchange close: the cause is raised
    est = Estimator.from_torch(model=lambda config: RankOneExploding(),
                               optimizer=optimizer_creator, loss=nn.CrossEntropyLoss(),
                               backend="ray")
    with pytest.raises(OrcaRuntimeError, match="rank 1 failed on purpose") as info:
        est.fit(train, epochs=2, **COLS)
    assert "worker 1 failed" in str(info.value)

    def actors_gone():  # Ray titles an actor's process "ray::<class>..."
        return not any("TrainWorker" in " ".join(p.info["cmdline"] or [])
                       for p in psutil.process_iter(["cmdline"]))
    wait_for(actors_gone, 30, "the workers' Ray actor processes to end")
    wait_for(lambda: ray.available_resources().get("CPU") == 2, 30,
             "the workers' CPUs to be free again")

    with pytest.raises(InvalidArgumentError, match="workers_per_node"):
        torch_estimator(workers_per_node=2).fit(train, **COLS)
