"""The RayOnSpark quick start's parameter server, unchanged but for the import.

    python examples/ray_parameter_server.py                       # local
    python examples/ray_parameter_server.py --cluster-mode standalone --master spark://h:7077
"""
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--cluster-mode", default="local")
parser.add_argument("--master", default=None)
parser.add_argument("--num-nodes", type=int, default=2)
args = parser.parse_args()
cluster_mode = args.cluster_mode

# --- from here on, the seed program; only this import changed (bigdl.orca -> sparkorca)
from sparkorca import init_orca_context, stop_orca_context, OrcaContext

if cluster_mode == "local":  # For local machine
    sc = init_orca_context(cluster_mode="local", cores=4, memory="4g", init_ray_on_spark=True)
elif cluster_mode == "standalone":  # A standalone cluster (the seed shows k8s / yarn here)
    sc = init_orca_context(cluster_mode="standalone", master=args.master,
                           num_nodes=args.num_nodes, cores=1, memory="1g",
                           init_ray_on_spark=True)

ray_ctx = OrcaContext.get_ray_context()
address_info = ray_ctx.address_info  # node_ip_address, object_store_address, webui_url, ...
redis_address = ray_ctx.redis_address  # The redis address of the ray cluster.
print("address_info:", address_info)
print("redis_address:", redis_address)

import ray
import numpy as np

dim = 10
@ray.remote
class ParameterServer(object):
    def __init__(self, dim):
        self.parameters = np.zeros(dim)

    def get_parameters(self):
        return self.parameters

    def update_parameters(self, update):
        self.parameters += update

ps = ParameterServer.remote(dim)

import time

@ray.remote
def worker(ps, dim, num_iters):
    for _ in range(num_iters):
        # Get the latest parameters.
        parameters = ray.get(ps.get_parameters.remote())
        # Compute an update.
        update = 1e-3 * parameters + np.ones(dim)
        # Update the parameters.
        ps.update_parameters.remote(update)
        # Sleep a little to simulate a real workload.
        time.sleep(0.5)

# Test that worker is implemented correctly.
ray.get(worker.remote(ps, dim, 1))

# Start two workers.
worker_results = [worker.remote(ps, dim, 100) for _ in range(2)]

print(ray.get(ps.get_parameters.remote()))

stop_orca_context()
