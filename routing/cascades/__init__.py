"""Cascades: ask cheap experts first and decide from their answers whether to pay for more.

Each cascade is two modules: its decision rule and run-time plan (`agreement_plan`,
`learned_plan`: what the batch job's expert actors load, the `CascadeStep` a row takes
next), and its fitting on replay data (`agreement`, `learned`: families of settings,
cross-validation, the threshold choice), which imports the plan and never the other way
round; `answer_features` are the learned plan's inputs, `checkpoint` saves and loads a
learned cascade (with its skip gate's question featurizer). The subpackage may import
`routing.calibration`, `routing.replay`, `routing.features` (the checkpoint rebuilds the
gate's featurizer), `routing.core` and `routing.answers`, never `routing.routers` or
`routing.evaluation`; the top-level `routing.rules` / `routing.training`, evaluation,
`operators/` (plans only, tests/test_layering.py) and `pipelines/` may import it.
"""
