"""Small programs that show a context working end to end (``sparkorca demo``)."""

from __future__ import annotations

import random


def _inside(n: int) -> int:
    rng = random.Random(n)
    return sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)


def spark_pi(cores: int = 2, samples: int = 2_000_000) -> str:
    """Estimate pi on a local context, and report where the executors ran Python."""
    from . import OrcaContext, orca_context

    with orca_context(cluster_mode="local", cores=cores, memory="1g",
                      conf={"spark.ui.showConsoleProgress": False}) as sc:
        parts = max(2, cores * 2)
        per_part = samples // parts

        def count(index, _):
            import os
            import sys
            yield _inside(per_part + index), (os.getpid(), sys.executable)

        results = sc.parallelize(range(parts), parts).mapPartitionsWithIndex(count).collect()
        hits = sum(r[0] for r in results)
        pids = sorted({r[1][0] for r in results})
        pythons = sorted({r[1][1] for r in results})
        total = sum(per_part + i for i in range(parts))
        session = OrcaContext.get_spark_session()
        rows = session.range(0, 1000).selectExpr("sum(id) AS s").collect()[0]["s"]
        return (f"master {sc.master}: pi ~= {4.0 * hits / total:.4f} from {total} samples in "
                f"{parts} partitions on Python workers {pids} ({', '.join(pythons)}); "
                f"Spark SQL sum(0..999) = {rows}")
