"""An Orca PyTorch Estimator program (BigDL Orca 2.x style) with its imports
changed to sparkorca and nothing else: scikit-learn's digits in a Spark
DataFrame, an MLP trained by two workers under DDP, evaluated and used to predict.

    python examples/orca_pytorch_estimator.py --cluster-mode local-cluster
"""

import argparse

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

from sparkorca import init_orca_context, stop_orca_context, OrcaContext
from sparkorca.learn.pytorch import Estimator
from sparkorca.learn.metrics import Accuracy

parser = argparse.ArgumentParser()
parser.add_argument("--cluster-mode", default="local")
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()

if args.cluster_mode == "local":
    init_orca_context(cluster_mode="local", cores=2, memory="2g")
else:
    init_orca_context(cluster_mode=args.cluster_mode, num_nodes=2, cores=1, memory="1g")

x, y = load_digits(return_X_y=True)
rows = [(x[i] / 16.0).tolist() + [int(y[i])] for i in range(len(y))]
spark = OrcaContext.get_spark_session()
df = spark.createDataFrame([(r[:-1], r[-1]) for r in rows], ["features", "label"])
train_df, test_df = df.randomSplit([0.8, 0.2], seed=1)


def model_creator(config):
    torch.manual_seed(config.get("seed", 0))
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def optim_creator(model, config):
    return torch.optim.Adam(model.parameters(), lr=config["lr"])


est = Estimator.from_torch(model=model_creator, optimizer=optim_creator,
                           loss=nn.CrossEntropyLoss(), metrics=[Accuracy()],
                           config={"lr": 0.01}, backend="spark")
stats = est.fit(data=train_df, epochs=args.epochs, batch_size=64,
                feature_cols=["features"], label_cols=["label"], validation_data=test_df)
result = est.evaluate(data=test_df, batch_size=64, feature_cols=["features"],
                      label_cols=["label"])
print("evaluate:", result)
predictions = est.predict(data=test_df, feature_cols=["features"]).collect()
correct = sum(int(np.argmax(r.prediction)) == r.label for r in predictions)
print(f"predicted {len(predictions)} rows, holdout accuracy {correct / len(predictions):.3f}")
est.shutdown()
stop_orca_context()
