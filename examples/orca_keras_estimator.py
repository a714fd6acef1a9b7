"""An Orca Keras (tf2) Estimator program (BigDL Orca 2.x style) with its imports
changed to sparkorca and nothing else: data creators returning tf.data datasets,
Orca's step counts, evaluate on a creator, predict on XShards, save.

    python examples/orca_keras_estimator.py --cluster-mode local-cluster
"""

import argparse
import os
import tempfile

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sparkorca import init_orca_context, stop_orca_context
from sparkorca.data import XShards
from sparkorca.learn.tf2 import Estimator

parser = argparse.ArgumentParser()
parser.add_argument("--cluster-mode", default="local")
parser.add_argument("--epochs", type=int, default=4)
args = parser.parse_args()

if args.cluster_mode == "local":
    init_orca_context(cluster_mode="local", cores=2, memory="2g")
else:
    init_orca_context(cluster_mode=args.cluster_mode, num_nodes=2, cores=1, memory="1g")

x, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split((x / 16.0).astype(np.float32), y,
                                                    test_size=0.25, random_state=0)


def train_data_creator(config, batch_size):
    dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    return dataset.shuffle(len(y_train), seed=1).batch(batch_size)


def val_data_creator(config, batch_size):
    return tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(batch_size)


def model_creator(config):
    model = tf.keras.Sequential([tf.keras.Input((64,)),
                                 tf.keras.layers.Dense(128, activation="relu"),
                                 tf.keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.Adam(config["lr"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


batch_size = 64
est = Estimator.from_keras(model_creator=model_creator, config={"lr": 0.01},
                           backend="spark")
stats = est.fit(data=train_data_creator, epochs=args.epochs, batch_size=batch_size,
                steps_per_epoch=len(y_train) // batch_size,
                validation_data=val_data_creator,
                validation_steps=len(y_test) // batch_size)
print("fit:", {k: stats[k] for k in ("loss", "val_accuracy")})
result = est.evaluate(val_data_creator, num_steps=len(y_test) // batch_size)
print("evaluate:", result)
shards = XShards.partition({"x": x_test}, num_shards=2)
predictions = np.concatenate([s["prediction"] for s in est.predict(shards).collect()])
accuracy = np.mean(predictions.argmax(axis=1) == y_test)
print(f"predicted {len(predictions)} rows, holdout accuracy {accuracy:.3f}")
with tempfile.TemporaryDirectory() as tmp:
    est.save(os.path.join(tmp, "digits.keras"))
    print("saved:", sorted(os.listdir(tmp)))
est.shutdown()
stop_orca_context()
