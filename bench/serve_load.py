"""Load on the online endpoint, plain and with one expert replica killed (issue 20).

    python bench/serve_load.py                          # 32 clients, 2,000 requests per phase
    python bench/serve_load.py --clients 8 --requests 500 --json
    python bench/serve_load.py --no-kill                # the plain phase only

What it does, and why:

* It takes a config whose input is SQuAD JSON (the default is the replay example) and
  starts the endpoint as `routebatch serve CONFIG` does (`start_endpoint`, on a
  local Ray sized by the config's `ray` section) after running the batch job on the
  config's input once: the batch job's rows are both the questions sent and the answers
  every response is checked against (expert, answer, cost), so "failed" counts wrong
  answers as well as non-200s.
* Clients are threads with one keep-alive `requests.Session` each, sending single-item
  requests (the hardest case for the endpoint's batching) back to back from a shared
  queue of `--requests` items, so `--clients` requests are in flight at any time.
* Phase "plain" is that load alone. Phase "kill" is the same load, during which, once
  `--kill-at` of the requests are answered, the replica of the expert most questions go
  to is SIGKILLed by its PID (from the GCS actor table: Ray's public state API needs the
  dashboard, which the endpoint's local Ray does not start). It then reports how long
  Serve took to have a new replica of that deployment alive.
* A short warm-up (one request per client) comes first and is not counted.
* Figures: requests/s over the phase's wall time, p50/p99 latency per request from send
  to full response, and the failed count. The machine is shared and has 2 cores, which
  the clients, Ray and every replica share; figures are noisy, so run it more than once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_replicas(app: str, deployment: str) -> list[dict]:
    import ray._private.state as gcs_state

    name = f"ServeReplica:{app}:{deployment}"
    return [a for a in gcs_state.actors().values() if a.get("ActorClassName") == name and a.get("State") == "ALIVE" and a.get("Pid")]


def _percentile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_load(url: str, rows: list[dict], n_requests: int, n_clients: int, timeout_s: float, on_progress=None) -> dict[str, Any]:
    """Send `n_requests` single-item requests from `n_clients` keep-alive clients and
    check each answer against the batch job's row. `on_progress(done, started)` is
    called after every response (the kill phase uses it to pick its moment)."""
    import requests

    lock = threading.Lock()
    state = {"next": 0, "done": 0}
    latencies: list[float] = []
    failures: Counter = Counter()
    examples: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    i = state["next"]
                    if i >= n_requests:
                        return
                    state["next"] += 1
                row = rows[i % len(rows)]
                started = time.perf_counter()
                why = None
                try:
                    r = session.post(url, json={"id": row["id"], "question": row["question"], "context": row["context"]}, timeout=timeout_s)
                    body = r.json()
                    if r.status_code != 200:
                        why = f"HTTP {r.status_code} {body.get('error', {}).get('kind')}"
                        detail = f"{why}: {body.get('error', {}).get('detail')}"
                    elif (body["expert"], body["answer"], body["error"]) != (row["expert"], row["answer"], row["error"]) or abs(
                        body["cost_usd"] - row["cost_usd"]
                    ) > 1e-12:
                        why = "wrong answer"
                        detail = f"{why} for {row['id']}: {body.get('answer')!r} != {row['answer']!r}"
                except Exception as exc:  # noqa: BLE001 - counted as a failure
                    why = type(exc).__name__
                    detail = repr(exc)[:200]
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if why is not None:
                        failures[why] += 1
                        if len(examples) < 3:
                            examples.append(detail)
                    state["done"] += 1
                    done, begun = state["done"], state["next"]
                if on_progress is not None:
                    on_progress(done, begun)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = sorted(1000 * x for x in latencies)
    return {
        "requests": n_requests,
        "clients": n_clients,
        "ok": n_requests - sum(failures.values()),
        "failed": sum(failures.values()),
        "failed_by_kind": dict(failures),
        "failed_examples": examples,
        "wall_s": round(wall, 3),
        "requests_per_s": round(n_requests / wall, 1),
        "p50_ms": round(_percentile(ms, 50), 1),
        "p99_ms": round(_percentile(ms, 99), 1),
        "max_ms": round(ms[-1], 1),
    }


def main(argv: Optional[list[str]] = None) -> int:
    """The figures go to stdout, everything else to stderr: Ray's driver prints the
    raylet's messages (a killed worker, say) on stdout, so the work runs with stdout
    pointed at stderr and only the result is printed on the real stdout."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(REPO / "examples" / "squad-replay.yaml"))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000, help="requests per phase")
    ap.add_argument("--kill-at", type=float, default=0.25, help="fraction of the kill phase's requests answered before the kill")
    ap.add_argument("--no-kill", action="store_true", help="run the plain phase only")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args(argv)

    with contextlib.redirect_stdout(sys.stderr):
        result = _measure(args, ap)
    _print(result, args)
    return 0


def _measure(args: argparse.Namespace, ap: argparse.ArgumentParser) -> dict[str, Any]:
    import pyarrow.parquet as pq
    import ray

    from pipelines.batch_job import run_job, start_ray
    from pipelines.serve.app import APP_NAME, start_endpoint, stop_endpoint
    from routing.core.config import load_config
    from routing.answers.squad import load_squad

    logging.getLogger("ray").setLevel(logging.WARNING)
    config = load_config(args.config)
    if config.input.format != "squad":
        ap.error("the config's input must be SQuAD JSON (input.format: squad): its questions are what the bench sends")
    # A local Ray of the config's size, as start_ray would start it, but without the
    # workers' log lines on this process's stdout, which must hold only the figures
    # (JSON with --json). run_job and start_endpoint use the Ray they find.
    started_ray = not ray.is_initialized() and not (config.ray.address or os.environ.get("RAY_ADDRESS"))
    if started_ray:
        ray.init(address="local", num_cpus=config.ray.num_cpus or os.cpu_count() or 1, num_gpus=config.ray.num_gpus,
                 include_dashboard=False, log_to_driver=False)
    else:
        start_ray(config)
    endpoint = None
    result: dict[str, Any] = {"config": args.config, "clients": args.clients, "requests_per_phase": args.requests}
    try:
        with tempfile.TemporaryDirectory(prefix="rb-serve-load-") as tmp:
            run_job(config, output=str(Path(tmp) / "batch"), progress=False)
            answers = {r["id"]: r for r in pq.read_table(Path(tmp) / "batch", columns=["id", "expert", "answer", "error", "cost_usd"]).to_pylist()}
        # The questions themselves come from the input (the job's output keeps no context).
        rows = [{"id": q.id, "question": q.question, "context": q.context, **answers[q.id]} for q in load_squad(config.input.path)]
        endpoint = start_endpoint(config, host="127.0.0.1", port=_free_port())
        timeout = config.serve.request_timeout_s + 30
        run_load(endpoint.answer_url, rows, args.clients, args.clients, timeout)  # warm-up, not counted

        result["plain"] = run_load(endpoint.answer_url, rows, args.requests, args.clients, timeout)

        if not args.no_kill:
            busiest = Counter(r["expert"] for r in rows).most_common(1)[0][0]
            deployment = f"expert-{busiest}"
            victims = _alive_replicas(APP_NAME, deployment)
            if not victims:
                raise RuntimeError(f"no live replica of {deployment} to kill")
            victim = victims[0]
            kill: dict[str, Any] = {"deployment": deployment, "pid": victim["Pid"]}
            fired = threading.Event()
            at = max(1, int(args.kill_at * args.requests))

            def watch_replacement(killed_at: float) -> None:
                """Poll the GCS until a new replica of the deployment is alive, while the load goes on."""
                deadline = killed_at + 120
                while time.monotonic() < deadline:
                    new = [a for a in _alive_replicas(APP_NAME, deployment) if a["ActorID"] != victim["ActorID"]]
                    if new:
                        kill.update(replacement_pid=new[0]["Pid"], replacement_alive_within_s=round(time.monotonic() - killed_at, 2))
                        return
                    time.sleep(0.2)

            watcher: list[threading.Thread] = []

            def maybe_kill(done: int, begun: int) -> None:
                with kill_lock:
                    if done < at or fired.is_set():
                        return
                    fired.set()
                os.kill(victim["Pid"], signal.SIGKILL)
                kill.update(after_responses=done, in_flight=begun - done, replacement_pid=None, replacement_alive_within_s=None)
                watcher.append(threading.Thread(target=watch_replacement, args=(time.monotonic(),), daemon=True))
                watcher[0].start()

            kill_lock = threading.Lock()
            result["kill"] = run_load(endpoint.answer_url, rows, args.requests, args.clients, timeout, on_progress=maybe_kill)
            for w in watcher:
                w.join()
            result["kill"]["killed"] = kill
    finally:
        if endpoint is not None:
            stop_endpoint(endpoint)
        if started_ray and ray.is_initialized():
            ray.shutdown()
    return result


def _print(result: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.clients} clients, {args.requests} single-item requests per phase, {args.config}")
        print(f"{'phase':<6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'failed':>7}")
        for phase in ("plain", "kill"):
            if phase in result:
                r = result[phase]
                print(f"{phase:<6} {r['requests_per_s']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8} {r['failed']:>7}  {r['failed_by_kind'] or ''}")
        if "kill" in result:
            k = result["kill"]["killed"]
            print(
                f"kill: {k['deployment']} pid {k['pid']} after {k.get('after_responses')} responses "
                f"({k.get('in_flight')} in flight); replacement pid {k.get('replacement_pid')} alive within {k.get('replacement_alive_within_s')} s"
            )
        for phase in ("plain", "kill"):
            for ex in result.get(phase, {}).get("failed_examples", []):
                print(f"  {phase}: {ex}")


if __name__ == "__main__":
    sys.exit(main())
