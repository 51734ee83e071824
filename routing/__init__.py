"""Routing: everything that decides which expert answers a question, without Ray.

Subpackages, bottom to top (a subpackage imports only those below it, see
`tests/test_layering.py`): `answers` (span decoding, prompts, SQuAD scoring, row checks),
`core` (config schema, costs, storage, checkpoint files), `replay` (replay data, metrics),
`calibration` (policies and statistical guarantees), `features` (router inputs), `routers`
and `cascades` (the two kinds of learned router, independent of each other), `evaluation`
(benchmarks). The top-level modules `rules` (build the router a config asks for) and
`training` (fit a checkpoint) may import any subpackage; nothing in `routing/` imports
`operators/`, `pipelines/` or Ray.
"""
