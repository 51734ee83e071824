"""Actor facts straight from Ray's GCS, without the dashboard (the tests' local Ray
runs without one). Ray's public state API goes through the dashboard's HTTP server."""

from __future__ import annotations


def actors_named(fragment: str, state: str | None = None) -> list[dict]:
    import ray._private.state as gcs_state

    found = []
    for info in gcs_state.actors().values():
        if fragment in (info.get("ActorClassName") or "") and (state is None or info.get("State") == state):
            found.append(info)
    return found
