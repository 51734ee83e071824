"""Pre-answer router models and their checkpoints: predict each expert's loss from features.

`base` is the estimator contract, `baselines`, `l2d` and `trunk` are the model kinds (the
last two seeded torch ensembles on `ensemble`, with `mlp`, their torch helpers), `registry` maps the kind names that the CLI and checkpoints
use to classes, and `checkpoint` saves and loads a trained router with its routing
policy. It may import `routing.features`, `routing.calibration`, `routing.replay`,
`routing.core` and `routing.answers`, never `routing.cascades` or `routing.evaluation`;
the top-level `routing.rules` / `routing.training`, evaluation and the pipelines may import it.
"""
