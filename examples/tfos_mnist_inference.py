"""TensorFlowOnSpark's keras/mnist_inference.py on sparkorca: the same single-node
inference function on every executor at once (TFParallel), each on its shard of
the TFRecord part files, each writing its own part of the predictions. It ported
from TFoS by changing one import line:

    from tensorflowonspark import TFParallel   ->   from sparkorca.cluster import TFParallel

    python examples/tfos_mnist_inference.py [--cluster-mode local-cluster] [--cluster_size 2]

To stay small and offline it makes its own "MNIST": 8x8 images of 10 noisy digit
prototypes (pixels 0..16), trains a tiny Keras model on the driver and exports it
as a SavedModel, as mnist_spark.py would have. The paths must be readable by every
executor (here: one machine; on a cluster: HDFS or another shared filesystem).
"""

import argparse
import os
import tempfile

import numpy as np

from sparkorca import init_orca_context, stop_orca_context
from sparkorca.cluster import TFParallel

PIXELS = 64  # 8x8


def inference(args, ctx):
    """Runs on each executor: TFoS's inference(), with 8x8 images."""
    import tensorflow as tf

    def parse(example):
        feature_def = {"label": tf.io.FixedLenFeature(1, tf.int64),
                       "image": tf.io.FixedLenFeature(PIXELS, tf.int64)}
        features = tf.io.parse_single_example(example, feature_def)
        image = tf.cast(features["image"], tf.float32) / 16.0
        return image, features["label"]

    # the model exported by the training program
    saved_model = tf.saved_model.load(ctx.absolute_path(args.export_dir), tags="serve")
    predict = saved_model.signatures["serving_default"]

    # this copy's shard of the part files
    files = tf.data.Dataset.list_files(ctx.absolute_path(args.images_labels) + "/part-*",
                                       shuffle=False)
    ds = (files.shard(ctx.num_workers, ctx.worker_num)
          .interleave(tf.data.TFRecordDataset)
          .map(parse)
          .batch(10))

    output = ctx.absolute_path(args.output)
    tf.io.gfile.makedirs(output)
    with tf.io.gfile.GFile(f"{output}/part-{ctx.worker_num:05d}", "w") as f:
        for images, labels in ds:
            # Keras 3 names an exported model's outputs output_0, output_1, ...
            probabilities = predict(image=images)["output_0"]
            predictions = tf.math.argmax(probabilities, axis=1)
            for label, pred in zip(labels.numpy()[:, 0], predictions.numpy()):
                f.write(f"{label} {pred}\n")


def make_digits(n, seed):
    """``n`` noisy copies of 10 fixed 8x8 prototypes: pixels 0..16, labels 0..9."""
    prototypes = np.random.default_rng(0).integers(0, 17, size=(10, PIXELS))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n)
    images = np.clip(prototypes[labels] + rng.normal(0, 4, size=(n, PIXELS)), 0, 16)
    return images.round().astype(np.int64), labels.astype(np.int64)


def train_and_export(export_dir):
    """The stand-in for mnist_spark.py: a tiny model, exported as a SavedModel."""
    import keras

    images, labels = make_digits(2000, seed=1)
    model = keras.Sequential([keras.Input(shape=(PIXELS,), name="image"),
                              keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images / 16.0, labels, epochs=3, batch_size=32, verbose=0)
    model.export(export_dir, verbose=False)


def write_tfrecords(path, images, labels, num_files):
    """TFoS's mnist_data_setup.py output: part files of Examples (label, image)."""
    import tensorflow as tf

    os.makedirs(path)
    for part, rows in enumerate(np.array_split(np.arange(len(labels)), num_files)):
        with tf.io.TFRecordWriter(os.path.join(path, f"part-{part:05d}")) as writer:
            for i in rows:
                feature = {
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[labels[i]])),
                    "image": tf.train.Feature(int64_list=tf.train.Int64List(value=images[i]))}
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cluster-mode", default="local")
    parser.add_argument("--cluster_size", type=int, default=2, help="number of copies")
    parser.add_argument("--rows", type=int, default=1000, help="images to infer")
    parser.add_argument("--work_dir", default=None,
                        help="where the data, model and output go (default: a temp dir)")
    args = parser.parse_args()

    sc = init_orca_context(cluster_mode=args.cluster_mode, num_nodes=args.cluster_size,
                           cores=args.cluster_size if args.cluster_mode == "local" else 1,
                           memory="1g")
    with tempfile.TemporaryDirectory(prefix="tfos-mnist-") as tmp:
        work = os.path.abspath(args.work_dir or tmp)
        args.images_labels = os.path.join(work, "data", "test")
        args.export_dir = os.path.join(work, "export")
        args.output = os.path.join(work, "predictions")
        try:
            train_and_export(args.export_dir)
            images, labels = make_digits(args.rows, seed=2)
            write_tfrecords(args.images_labels, images, labels, num_files=2 * args.cluster_size)

            TFParallel.run(sc, inference, args, args.cluster_size)

            parts = sorted(p for p in os.listdir(args.output) if p.startswith("part-"))
            pairs = []
            for part in parts:
                with open(os.path.join(args.output, part)) as f:
                    pairs += [tuple(map(int, line.split())) for line in f]
        finally:
            stop_orca_context()
    accuracy = np.mean([label == pred for label, pred in pairs]) if pairs else 0.0
    print(f"predictions: {len(pairs)} for {args.rows} rows in {len(parts)} part files, "
          f"accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
