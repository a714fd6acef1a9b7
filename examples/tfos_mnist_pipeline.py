"""TensorFlowOnSpark's keras/mnist_pipeline.py on sparkorca: a Spark ML
TFEstimator trains a Keras model on a TFCluster fed from a DataFrame, and the
TFModel it returns classifies the same DataFrame from the exported SavedModel.
It ports from TFoS by changing the imports:

    from tensorflowonspark import TFNode  ->  from sparkorca.cluster import TFNode
    from tensorflowonspark.pipeline import TFEstimator, TFModel
        ->  from sparkorca.cluster.pipeline import TFEstimator, TFModel

The data is generated, not downloaded: scikit-learn's 8x8 digits when it is
installed, else random 8x8 "images" of 10 classes. Run it as TFoS programs run:

    PYSPARK_PYTHON=$(which python) spark-submit --master local-cluster[2,1,1024] \\
        examples/tfos_mnist_pipeline.py --cluster_size 2 --export_dir /tmp/digits_export

``--mode train`` fits, then transforms with the returned model and prints the
accuracy; ``--mode inference`` loads ``--export_dir`` into a TFModel and writes
the predictions as JSON to ``--output``.
"""


def main_fun(args, ctx):
    import numpy as np
    import tensorflow as tf

    from sparkorca.cluster import TFNode

    # reads TF_CONFIG: one replica per node of the TFCluster
    strategy = tf.distribute.MultiWorkerMirroredStrategy()

    def build_model():
        model = tf.keras.Sequential([
            tf.keras.Input(shape=(8, 8, 1), name="image"),
            # pixels are 0..16: scaling inside the model serves raw pixels too
            tf.keras.layers.Rescaling(1 / 16.0),
            tf.keras.layers.Conv2D(8, 3, activation="relu"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(32, activation="relu"),
            tf.keras.layers.Dense(10, activation="softmax"),
        ])
        return model

    # no input_mapping: each row is a tuple in sorted column order, (image, label)
    tf_feed = TFNode.DataFeed(ctx.mgr, False)
    images, labels = [], []
    while not tf_feed.should_stop():
        batch = tf_feed.next_batch(args.batch_size)
        if len(batch) == 0:
            break  # fit() has fed all its data
        for image, label in batch:
            images.append(np.reshape(np.array(image, np.float32), (8, 8, 1)))
            labels.append(label)
    x, y = np.stack(images), np.array(labels, np.int64)

    # Keras 3's Model.fit does not run under MultiWorkerMirroredStrategy
    # (keras-team/keras#20585): a custom loop, the same number of steps on every node
    # so the synchronous all-reduce never waits for a node that ran dry
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=ctx.task_index) \
        .repeat().batch(args.batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    batches = iter(strategy.experimental_distribute_dataset(ds.with_options(options)))
    with strategy.scope():
        model = build_model()
        optimizer = tf.keras.optimizers.Adam(0.01)
    global_batch = args.batch_size * strategy.num_replicas_in_sync

    @tf.function
    def step(inputs):
        def replica_step(bx, by):
            with tf.GradientTape() as tape:
                per_row = tf.keras.losses.sparse_categorical_crossentropy(by, model(bx))
                loss = tf.nn.compute_average_loss(per_row, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.reduce("SUM", strategy.run(replica_step, args=inputs), axis=None)

    for epoch in range(args.epochs):
        for _ in range(args.steps_per_epoch):
            loss = step(next(batches))
        print(f"node {ctx.worker_num} ({ctx.job_name}): epoch {epoch + 1} loss {float(loss):.3f}")

    if ctx.job_name == "chief":
        # export a plain copy of the trained weights: the SavedModel then holds no
        # distributed variables ('serve' tag, 'serving_default' signature)
        plain = build_model()
        plain.set_weights(model.get_weights())
        plain.export(args.export_dir, verbose=False)

    # terminating the feed tells Spark to skip what it has not fed yet
    tf_feed.terminate()


def digits(seed=0):
    """(images as 64 ints 0..16, labels): scikit-learn's digits, or a generated set."""
    import numpy as np
    try:
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)
    except ImportError:
        rng = np.random.default_rng(seed)
        centers = rng.integers(0, 17, size=(10, 64))
        y = rng.integers(0, 10, size=1797)
        x = np.clip(centers[y] + rng.integers(-3, 4, size=(1797, 64)), 0, 16)
    order = np.random.default_rng(seed).permutation(len(y))
    return x[order].astype(int), y[order].astype(int)


if __name__ == "__main__":
    import argparse
    import os

    from pyspark.conf import SparkConf
    from pyspark.context import SparkContext
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from sparkorca.cluster.pipeline import TFEstimator, TFModel

    sc = SparkContext(conf=SparkConf().setAppName("tfos_mnist_pipeline"))
    spark = SparkSession(sc)

    executors = sc._conf.get("spark.executor.instances")
    num_executors = int(executors) if executors is not None else 2

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", help="number of records per batch", type=int, default=32)
    parser.add_argument("--cluster_size", help="number of nodes in the cluster", type=int,
                        default=num_executors)
    parser.add_argument("--epochs", help="number of epochs", type=int, default=1)
    parser.add_argument("--steps_per_epoch", help="training steps per epoch", type=int,
                        default=150)
    parser.add_argument("--mode", choices=["train", "inference"], default="train")
    parser.add_argument("--export_dir", help="path to export the SavedModel",
                        default="digits_export")
    parser.add_argument("--output", help="path to save predictions", default="predictions")
    parser.add_argument("--tensorboard", help="launch tensorboard process", action="store_true")
    args = parser.parse_args()
    # the nodes and the executors work in directories of their own: share absolute paths
    args.export_dir = os.path.abspath(args.export_dir)
    print("args:", args)

    x, y = digits()
    df = spark.createDataFrame([(x[i].tolist(), int(y[i])) for i in range(len(y))],
                               ["image", "label"])

    if args.mode == "train":
        estimator = TFEstimator(main_fun, args) \
            .setInputMapping({"image": "image", "label": "label"}) \
            .setExportDir(args.export_dir) \
            .setClusterSize(args.cluster_size) \
            .setTensorboard(args.tensorboard) \
            .setEpochs(args.epochs) \
            .setBatchSize(args.batch_size) \
            .setGraceSecs(60)
        model = estimator.fit(df)
    else:
        model = TFModel(args).setExportDir(args.export_dir).setBatchSize(args.batch_size)

    # the flat 64 pixels are reshaped to the SavedModel's (8, 8, 1) input
    model.setInputMapping({"image": "image"}) \
        .setOutputMapping({"output_0": "prediction"}) \
        .setSignatureDefKey("serving_default") \
        .setTagSet("serve")
    preds = model.transform(df).withColumn(
        "argmax", F.expr("array_position(prediction, array_max(prediction)) - 1"))
    preds.show(5)
    if args.mode == "inference":
        preds.write.json(args.output)
    predicted = [r.argmax for r in preds.select("argmax").collect()]
    labels = [r.label for r in df.select("label").collect()]  # the same rows, in order
    accuracy = sum(int(p == t) for p, t in zip(predicted, labels)) / len(labels)
    print(f"predictions: {len(predicted)} for {len(labels)} rows, accuracy {accuracy:.3f}")
    sc.stop()
