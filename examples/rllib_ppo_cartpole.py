"""RLlib PPO on CartPole with a learning-rate grid search, on Ray inside Spark
(the Databricks article's example). Slow; not part of the default test run.

    pip install 'sparkorca[rllib]'   # Ray's RLlib, torch and the Pillow RLlib imports
    python examples/rllib_ppo_cartpole.py [--cluster-mode local-cluster]
"""
import argparse

from ray import tune
from ray.rllib.algorithms.ppo import PPOConfig

from sparkorca import init_orca_context, stop_orca_context


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster-mode", default="local")
    ap.add_argument("--target-reward", type=float, default=200.0)
    args = ap.parse_args()
    init_orca_context(cluster_mode=args.cluster_mode, cores=4 if args.cluster_mode == "local"
                      else 2, num_nodes=2, memory="2g", init_ray_on_spark=True)
    try:
        metric = "env_runners/episode_return_mean"
        config = (PPOConfig().environment("CartPole-v1")
                  .env_runners(num_env_runners=1)
                  .training(lr=tune.grid_search([0.01, 0.001, 0.0001])))
        tuner = tune.Tuner(
            "PPO", param_space=config,
            run_config=tune.RunConfig(stop={metric: args.target_reward}))
        best = tuner.fit().get_best_result(metric=metric, mode="max")
        reward = best.metrics["env_runners"]["episode_return_mean"]
        print(f"best lr: {best.config['lr']}, episode return: {reward:.1f}")
    finally:
        stop_orca_context()


if __name__ == "__main__":
    main()
