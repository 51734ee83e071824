"""`routebatch serve CONFIG [--port P] [--host H]`: the online endpoint, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

from pipelines import exit_codes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="answer questions over HTTP with the config's router and experts (Ray Serve)")
    p.add_argument("config", help="the job's YAML config (its experts, router, ray and serve sections are used)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.set_defaults(func=_serve)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    import ray

    from pipelines.batch_job import start_ray
    from pipelines.resources import PlanDoesNotFit
    from pipelines.serve.app import DeployFailed, Endpoint, check_servable, start_endpoint, stop_endpoint
    from routing.core.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not 0 < args.port < 65536:
        print("routebatch serve: --port must be between 1 and 65535", file=sys.stderr)
        return exit_codes.USAGE
    config = load_config(args.config)
    check_servable(config)  # before Ray starts: a refused config costs nothing
    # Ray first, then our SIGTERM handler: ray.init installs a handler that ends the
    # process on the spot, which would leave Serve's replicas and a local Ray behind.
    # Ours turns SIGTERM (a scheduler or container runtime stopping us) into the same
    # clean shutdown as Ctrl-C, at any point from here on, deployment included.
    started_ray = start_ray(config)
    signal.signal(signal.SIGTERM, _interrupt)
    endpoint = Endpoint(url="", started_ray=started_ray)
    try:
        endpoint = start_endpoint(config, host=args.host, port=args.port)
        print(
            f"routebatch: serving on {endpoint.url}\n"
            f"  POST {endpoint.answer_url}  body: {{\"question\": ..., \"context\": ..., \"id\": ...}} or a list of them\n"
            f"  GET  {endpoint.health_url}\n"
            "  Ctrl-C to stop",
            flush=True,
        )
        while True:  # until Ctrl-C or SIGTERM
            time.sleep(60)
    except PlanDoesNotFit as exc:
        print(f"routebatch: the endpoint does not fit the Ray cluster, nothing was deployed:\n{exc}", file=sys.stderr)
        return exit_codes.CONFIG
    except DeployFailed as exc:
        print(f"routebatch serve: {exc}", file=sys.stderr)
        return exit_codes.FAILED
    except KeyboardInterrupt:
        print("routebatch: stopping the endpoint", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop_endpoint(Endpoint(url=endpoint.url, started_ray=started_ray and ray.is_initialized()))
    return exit_codes.OK
