"""A TensorFlowOnSpark-style program: train on an RDD fed to the nodes, then
inference. It ported from TFoS by changing one import line:

    from tensorflowonspark import TFCluster, TFNode   ->
    from sparkorca.cluster import TFCluster, TFNode

Run it as TFoS programs run, with spark-submit:

    PYSPARK_PYTHON=$(which python) spark-submit --master local-cluster[2,1,1024] \\
        examples/tfos_linear_regression.py --cluster_size 2 --epochs 3

Each node fits y = w.x + b by least squares on the rows it is fed (numpy keeps
the example light; a TF or PyTorch model goes in the same place), the chief
saves the model, and an inference cluster predicts one value per input row.
"""

import argparse

import numpy as np
from pyspark.conf import SparkConf
from pyspark.context import SparkContext

from sparkorca.cluster import TFCluster, TFNode

TRUE_W = np.array([2.0, -3.0, 0.5])
TRUE_B = 1.0


def main_fun(args, ctx):
    import os

    import numpy as np

    if args.mode == "train":
        tf_feed = TFNode.DataFeed(ctx.mgr, train_mode=True)
        xtx, xty, steps = np.zeros((4, 4)), np.zeros(4), 0
        while not tf_feed.should_stop():
            batch = tf_feed.next_batch(args.batch_size)
            if len(batch) == 0:
                break  # train() has fed all its data
            x = np.array([np.append(row[0], 1.0) for row in batch])
            y = np.array([row[1] for row in batch])
            xtx += x.T @ x
            xty += x.T @ y
            steps += 1
            if steps >= args.max_steps:
                tf_feed.terminate()  # enough: Spark stops feeding this node
        model = np.linalg.solve(xtx, xty)
        print(f"node {ctx.worker_num} ({ctx.job_name}:{ctx.task_index}): {steps} steps, "
              f"model {np.round(model, 3)}")
        if ctx.job_name == "chief":
            path = ctx.absolute_path(args.model_dir)[len("file://"):]
            os.makedirs(path, exist_ok=True)
            np.save(os.path.join(path, "model.npy"), model)
    else:
        model = np.load(os.path.join(ctx.absolute_path(args.model_dir)[len("file://"):],
                                     "model.npy"))
        tf_feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
        while not tf_feed.should_stop():
            batch = tf_feed.next_batch(args.batch_size)
            if len(batch):
                x = np.array([np.append(row[0], 1.0) for row in batch])
                tf_feed.batch_results((x @ model).tolist())


def sample(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ TRUE_W + TRUE_B + rng.normal(scale=0.01, size=n)
    return [(x[i], float(y[i])) for i in range(n)]


if __name__ == "__main__":
    sc = SparkContext(conf=SparkConf().setAppName("tfos_linear_regression"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=100)
    parser.add_argument("--cluster_size", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max_steps", type=int, default=1000)
    parser.add_argument("--model_dir", default="linear_model")
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()

    train_rdd = sc.parallelize(range(4), 4).flatMap(lambda i: sample(i, args.rows // 4))
    args.mode = "train"
    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, num_ps=0,
                            input_mode=TFCluster.InputMode.SPARK, master_node="chief")
    cluster.train(train_rdd, args.epochs)
    cluster.shutdown()

    args.mode = "inference"
    test_rows = sample(99, 1000)
    cluster = TFCluster.run(sc, main_fun, args, args.cluster_size, num_ps=0,
                            input_mode=TFCluster.InputMode.SPARK)
    predictions = cluster.inference(sc.parallelize(test_rows, 3)).collect()
    cluster.shutdown()
    error = max(abs(p - y) for p, (_, y) in zip(predictions, test_rows))
    print(f"predictions: {len(predictions)} for {len(test_rows)} rows, max error {error:.3f}")
    sc.stop()
