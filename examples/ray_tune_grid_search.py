"""Ray Tune grid search on the Ray cluster inside a Spark application.

    python examples/ray_tune_grid_search.py [--cluster-mode local-cluster]
"""
import argparse

from ray import tune

from sparkorca import init_orca_context, stop_orca_context


def objective(config):
    # A stand-in for training: the score is best at lr=0.01, momentum=0.9.
    score = -((config["lr"] - 0.01) ** 2) * 1e4 - (config["momentum"] - 0.9) ** 2
    tune.report({"score": score})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster-mode", default="local")
    args = ap.parse_args()
    init_orca_context(cluster_mode=args.cluster_mode, cores=2 if args.cluster_mode == "local"
                      else 1, num_nodes=2, memory="1g", init_ray_on_spark=True)
    try:
        tuner = tune.Tuner(
            objective,
            param_space={"lr": tune.grid_search([0.1, 0.01, 0.001]),
                         "momentum": tune.grid_search([0.5, 0.9])},
            tune_config=tune.TuneConfig(metric="score", mode="max"))
        best = tuner.fit().get_best_result()
        print("best config:", best.config)
    finally:
        stop_orca_context()


if __name__ == "__main__":
    main()
