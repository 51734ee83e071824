"""`routebatch validate CONFIG`: every check that needs no compute, in seconds."""

from __future__ import annotations

import argparse

from pipelines import exit_codes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a job config without running anything")
    p.add_argument("config")
    p.add_argument("--output", help="check this output path instead of output.path")
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from pipelines.batch_job import preflight
    from routing.core.config import load_config

    config = load_config(args.config)
    files = preflight(config, args.output or config.output.path, config.output.overwrite)
    experts = ", ".join(f"{e.name} ({e.kind})" for e in config.experts)
    print(f"ok: {args.config}")
    print(f"  input: {len(files.paths)} {config.input.format} file(s) at {config.input.path}")
    print(f"  experts: {experts}")
    router = config.router
    if router.kind == "cascade":
        from routing.cascades.agreement_plan import describe_cascade

        print(f"  router: cascade {describe_cascade(router.stages, router.final, router.agreement, router.quorum)}")
    elif router.kind == "learned-cascade":
        from routing.cascades.checkpoint import plan_from_spec

        print(f"  router: learned cascade {plan_from_spec(router).describe()}")
    else:
        print(f"  router: {router.kind}")
    print(f"  output: {args.output or config.output.path}")
    return exit_codes.OK
