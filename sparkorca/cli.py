"""The ``sparkorca`` command: doctor, demo, version."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time

from ._version import __version__

# (what, distributions that provide it, how to get it)
_OPTIONAL = [
    ("Ray", ("ray",), "pip install 'sparkorca[ray]'"),
    ("TensorFlow", ("tensorflow", "tensorflow-cpu"), "pip install 'sparkorca[tf]' "
                                                      "(or tensorflow-cpu)"),
    ("PyTorch", ("torch",), "pip install 'sparkorca[torch]'"),
]


def _dist_version(names) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def doctor() -> int:
    """Print what sparkorca finds on this machine; exit 1 if Spark cannot run."""
    from .errors import JavaError
    from .spark.java import check_java, spark_home
    from .spark.pyenv import env_kind

    ok = True
    print(f"sparkorca  {__version__}")
    kind = env_kind() or "system Python (not a venv or conda env: yarn modes need "\
                         "penv_archive= or python_location=)"
    print(f"Python     {sys.version.split()[0]} at {sys.executable} [{kind}]")
    try:
        java, version = check_java()
        print(f"Java       {version} at {java}")
    except JavaError as e:
        ok = False
        print(f"Java       MISSING: {e}")
    spark = _dist_version(("pyspark",))
    if spark:
        print(f"Spark      pyspark {spark} (SPARK_HOME {spark_home()})")
    else:
        ok = False
        print("Spark      MISSING: pip install 'pyspark>=3.5'")
    for what, dists, fix in _OPTIONAL:
        found = _dist_version(dists)
        print(f"{what:<10} {found if found else 'not installed (optional): ' + fix}")
    print("status     " + ("ready" if ok else "NOT READY: fix the MISSING lines above"))
    return 0 if ok else 1


def demo(cores: int) -> int:
    """Run the parameter-server demo on a local context with Ray inside Spark."""
    if _dist_version(("ray",)) is None:
        print("sparkorca demo runs Ray inside Spark and needs Ray: pip install 'sparkorca[ray]'",
              file=sys.stderr)
        return 1
    from .demos import parameter_server
    start = time.monotonic()
    print(parameter_server(cores=cores))
    print(f"demo finished in {time.monotonic() - start:.1f}s; nothing left running")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sparkorca", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check Java, Spark, Ray, TensorFlow and PyTorch")
    d = sub.add_parser("demo", help="run the parameter-server demo (Ray inside local Spark)")
    d.add_argument("--cores", type=int, default=2)
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(argv)
    if args.command == "doctor":
        return doctor()
    if args.command == "demo":
        return demo(args.cores)
    print(__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
