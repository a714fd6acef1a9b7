"""``ray start`` without a Ray Client server: ``python -m sparkorca.ray.ray_start start ...``.

``ray start --head`` runs a Ray Client server (one more Python process importing
Ray, and one more listener) whenever Ray Client's dependencies are installed, and
has no option to leave it out. sparkorca never uses Ray Client (it refuses ray://
addresses: drivers join through the GCS), so the head starts without it: Ray is
told the dependency is missing, which is how a minimal Ray install behaves. If
Ray renames the check, the server simply starts as before.
"""

from __future__ import annotations


def main() -> None:
    from ray.scripts import scripts
    scripts.get_ray_client_dependency_error = (
        lambda: ImportError("Ray Client is not used by sparkorca"))
    scripts.main()


if __name__ == "__main__":
    main()
