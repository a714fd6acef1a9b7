"""sparkorca.learn's pure parts: metrics (exact, mergeable), Arrow <-> numpy for the
Estimators' inputs, argument checks that need no engine."""

import numpy as np
import pyarrow as pa
import pytest

from sparkorca.errors import InvalidArgumentError
from sparkorca.learn import metrics as M
from sparkorca.learn.data import Columns, batch_arrays, shard_batches


def _value(metric, pred, target):
    metric.update(np.asarray(pred), np.asarray(target))
    return metric.compute()


def test_metrics_give_orcas_values():
    assert _value(M.Accuracy(), [0, 2, 3, 4], [1, 2, 3, 4]) == 0.75
    assert _value(M.Accuracy(), [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1]) == 2 / 3
    assert _value(M.Accuracy(), [[0.7], [0.2]], [[1], [1]]) == 0.5  # one probability
    assert _value(M.MSE(), [[1, -2], [1, 1]], [[0, 1], [0, 1]]) == 2.75
    assert _value(M.MAE(), [[1, -2], [1, 1]], [[0, 1], [0, 1]]) == 1.25
    assert _value(M.Top5Accuracy(), [np.arange(10), np.arange(10)[::-1]], [9, 9]) == 0.5
    assert _value(M.Precision(), [0.9, 0.8, 0.1, 0.7], [1, 0, 1, 1]) == 2 / 3
    assert _value(M.Recall(), [0.9, 0.8, 0.1, 0.7], [1, 0, 1, 1]) == 2 / 3
    assert _value(M.F1Score(), [0.9, 0.8, 0.1, 0.7], [1, 0, 1, 1]) == pytest.approx(2 / 3)


def test_auc_is_exact_and_counts_ties_half():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    score = np.round(rng.random(500), 2)  # many ties
    label = (rng.random(500) < score).astype(np.int64)
    assert _value(M.AUC(), score, label) == pytest.approx(roc_auc_score(label, score))


def test_merged_states_equal_one_pass_even_with_unequal_parts():
    rng = np.random.default_rng(1)
    pred, target = rng.random((103, 4)), rng.integers(0, 4, 103)
    whole = M.Accuracy()
    whole.update(pred, target)
    parts = []
    for lo, hi in ((0, 3), (3, 3), (3, 103)):  # one part empty, one tiny
        m = M.Accuracy()
        m.update(pred[lo:hi], target[lo:hi]) if hi > lo else None
        parts.append(M.states_to_json([m]))
    total = M.fresh([M.Accuracy()])
    M.merge_json(total, parts)
    assert total[0].compute() == whole.compute()
    # Orca's mean of per-part accuracies would differ: the parts differ in size
    auc_parts = [M.AUC() for _ in range(2)]
    auc_parts[0].update(pred[:10, 0], target[:10] > 1)
    auc_parts[1].update(pred[10:, 0], target[10:] > 1)
    auc = M.fresh([M.AUC()])
    M.merge_json(auc, [M.states_to_json([p]) for p in auc_parts])
    assert auc[0].compute() == pytest.approx(_value(M.AUC(), pred[:, 0], target > 1))


def test_metrics_argument_is_checked():
    assert [m.get_name() for m in M.resolve([M.Accuracy(), M.MSE()])] == ["Accuracy", "MSE"]

    def rmse(pred, target):
        return float(np.sqrt(np.mean((pred - target) ** 2)))
    assert M.resolve(rmse)[0].get_name() == "rmse"
    with pytest.raises(InvalidArgumentError, match="Accuracy\\(\\)"):
        M.resolve([M.Accuracy])
    with pytest.raises(InvalidArgumentError, match="distinct"):
        M.resolve([M.Accuracy(), M.Accuracy()])
    with pytest.raises(InvalidArgumentError, match="metrics"):
        M.resolve(["accuracy"])


def test_arrow_columns_become_orcas_arrays():
    batch = pa.RecordBatch.from_pydict({
        "f": pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], pa.list_(pa.float64())),
        "g": pa.array([0.5, 1.5, 2.5]),
        "img": pa.array([[[1, 2], [3, 4]]] * 3, pa.list_(pa.list_(pa.int32()))),
        "label": pa.array([1, 0, 2], pa.int32())})
    f, g, img = batch_arrays(batch, ["f", "g", "img"])
    assert f.shape == (3, 2) and f.dtype == np.float32 and f[2, 1] == 6
    assert g.shape == (3,) and g.dtype == np.float32
    assert img.shape == (3, 2, 2) and img[0, 1, 0] == 3
    (label,) = batch_arrays(batch, ["label"], labels=True)
    assert label.dtype == np.int64 and label.tolist() == [1, 0, 2]
    # a slice (as the feed hands out) keeps its rows
    (f2,) = batch_arrays(batch.slice(1, 2), ["f"])
    assert f2.tolist() == [[3, 4], [5, 6]]


def test_spark_ml_vectors_become_dense_arrays():
    vec = pa.StructArray.from_arrays(
        [pa.array([1, 0], pa.int8()), pa.array([None, 4], pa.int32()),
         pa.array([None, [1, 3]], pa.list_(pa.int32())),
         pa.array([[1.0, 2.0, 3.0, 4.0], [7.0, 8.0]], pa.list_(pa.float64()))],
        names=["type", "size", "indices", "values"])
    (dense,) = batch_arrays(pa.RecordBatch.from_arrays([vec], names=["v"]), ["v"])
    assert dense.tolist() == [[1, 2, 3, 4], [0, 7, 0, 8]]


def test_dict_shards_keep_shapes_and_tuples_of_inputs():
    shard = {"x": (np.arange(24, dtype=np.float64).reshape(2, 3, 4), np.ones(2)),
             "y": np.array([[1], [0]])}
    (batch,) = shard_batches(Columns(("x",), ("y",)), iter([shard]))
    x0, x1 = batch_arrays(batch, ["x"])
    assert x0.shape == (2, 3, 4) and x0[1, 2, 3] == 23 and x1.shape == (2,)
    (y,) = batch_arrays(batch, ["y"], labels=True)
    assert y.shape == (2, 1) and y.dtype == np.int64


def test_estimator_arguments_fail_before_anything_starts():
    torch = pytest.importorskip("torch")
    from sparkorca.learn.pytorch import Estimator

    def model(config):
        return torch.nn.Linear(2, 1)

    def opt(m, config):
        return torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(InvalidArgumentError, match="backend"):
        Estimator.from_torch(model=model, optimizer=opt, loss=torch.nn.MSELoss(),
                             backend="bigdl")
    with pytest.raises(InvalidArgumentError, match="loss"):
        Estimator.from_torch(model=model, optimizer=opt, loss=torch.nn.MSELoss)
    with pytest.raises(InvalidArgumentError, match="model"):
        Estimator.from_torch(model=torch.nn.Linear(2, 1), optimizer=opt, loss=None)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        Estimator.from_torch(model=model, optimizer=opt, loss=torch.nn.MSELoss(),
                             config={"batch_size": 4})
    est = Estimator.from_torch(model=model, optimizer=opt, loss=torch.nn.MSELoss())
    with pytest.raises(InvalidArgumentError, match="epochs"):
        est.fit(lambda config, batch_size: None, epochs=0)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        est.fit(lambda config, batch_size: None, batch_size=0)
    with pytest.raises(InvalidArgumentError, match="data"):
        est.fit([1, 2, 3], feature_cols=["x"], label_cols=["y"])
    with pytest.raises(InvalidArgumentError, match="reduce_results"):
        est.fit(lambda config, batch_size: None, reduce_results=False)
    with pytest.raises(InvalidArgumentError, match="num_steps"):
        est.evaluate(lambda config, batch_size: None, num_steps=10)
    with pytest.raises(TypeError, match="max_steps"):  # not silently ignored
        est.fit(lambda config, batch_size: None, max_steps=10)


def test_keras_estimator_arguments_fail_before_anything_starts(tmp_path):
    from sparkorca.learn.tf2 import Estimator
    with pytest.raises(InvalidArgumentError, match="backend"):
        Estimator.from_keras(model_creator=lambda config: None, backend="horovod")
    with pytest.raises(InvalidArgumentError, match="model_creator"):
        Estimator.from_keras(model_creator="model.keras")
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        Estimator.from_keras(model_creator=lambda config: None, config={"batch_size": 4})
    with pytest.raises(InvalidArgumentError, match="nope"):
        Estimator.from_keras(model_creator=lambda config: None, nope=1)
    est = Estimator.from_keras(model_creator=lambda config: None)
    with pytest.raises(InvalidArgumentError, match=r"\.keras or \.h5"):
        est.save(str(tmp_path / "saved_model_dir"))
    with pytest.raises(InvalidArgumentError, match="callbacks"):
        est.fit(lambda config, batch_size: None, callbacks=[object()])
    with pytest.raises(InvalidArgumentError, match="epochs"):
        est.fit(lambda config, batch_size: None, epochs=0)
    with pytest.raises(InvalidArgumentError, match="model_creator"):
        Estimator.from_keras().fit(lambda config, batch_size: None)
