"""The node layer: a supervised process launched from a Spark task (or the driver).

Ray node runners and TFCluster nodes are both "nodes": a Spark task (the *launcher*)
starts one with a typed configuration on stdin, waits for its READY (or FAILED)
hand-off, and detaches; from then on the node is tied to its executor JVM (pidfd)
and to the driver through an authenticated control channel, and it removes its temp
dir whatever ends it.

Modules, each with one job:

- ``config``    NodeConfig, the typed configuration every node gets (JSON on stdin)
- ``host``      the node address, temp roots (TMPDIR honoured), port reservations
- ``launch``    launcher side: start a node process, wait for READY, detach, stop
- ``handoff``   node side: read the launch, answer READY/FAILED/EXITED, wait to be released
- ``channel``   the authenticated JSON channel (mutual HMAC challenge)
- ``hub``       driver side: the control server every node registers with
- ``control``   node side: the control connection to the hub
- ``task``      the Spark-task prologue (executor identity, GPUs, barrier)
- ``job``       a Spark job run from a background thread (start, error, cancel)

Executor-side modules (``config``, ``host``, ``handoff``, ``channel``, ``control``,
``launch``, ``task``) import nothing of the driver side.
"""
