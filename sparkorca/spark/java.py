"""Find Java and Spark on this machine, and check Java is new enough."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Optional, Tuple

from ..errors import JavaError

MIN_JAVA = 17  # Spark 4 runs on Java 17 and 21


def spark_home() -> str:
    """SPARK_HOME, or the directory of the installed pyspark (which ships Spark)."""
    from pyspark.find_spark_home import _find_spark_home
    return _find_spark_home()


def spark_class() -> str:
    return os.path.join(spark_home(), "bin", "spark-class")


def spark_submit() -> str:
    return os.path.join(spark_home(), "bin", "spark-submit")


def find_java() -> Optional[str]:
    """$JAVA_HOME/bin/java, else java on PATH, as Spark's launcher looks for it."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = os.path.join(home, "bin", "java")
        return java if os.access(java, os.X_OK) else None
    return shutil.which("java")


def java_version(java: str) -> Tuple[int, str]:
    """(major version, version string) as ``java -version`` reports them."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    text = out.stderr + out.stdout
    m = re.search(r'version "([^"]+)"', text)
    if not m:
        raise JavaError(f"could not read the version of {java} from its output: {text!r}")
    version = m.group(1)
    parts = version.split(".")
    if parts[0] == "1":
        return int(parts[1]), version
    lead = re.match(r"\d+", parts[0])
    if not lead:
        raise JavaError(f"could not read the major version of {java} from {version!r}")
    return int(lead.group(0)), version


def check_java() -> Tuple[str, str]:
    """Return (java path, version), or raise JavaError saying what to install."""
    java = find_java()
    fix = f"install Java {MIN_JAVA} or 21 (e.g. 'apt-get install openjdk-17-jre-headless') " \
          "and put it on PATH or point JAVA_HOME at it"
    if java is None:
        where = (f"JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java"
                 if os.environ.get("JAVA_HOME") else "no java on PATH and JAVA_HOME is not set")
        raise JavaError(f"Java not found: {where}; {fix}")
    major, version = java_version(java)
    if major < MIN_JAVA:
        raise JavaError(f"Java at {java} is version {version}, Spark needs Java >= {MIN_JAVA}; "
                        f"{fix}")
    return java, version
