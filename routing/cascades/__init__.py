"""Cascades: ask cheap experts first and decide from their answers whether to pay for more.

`agreement` is the hand-set agreement cascade, `learned` the cascade whose stopping rule is a
fitted model over `answer_features`, `checkpoint` saves and loads a learned cascade. It may
import `routing.calibration`, `routing.replay`, `routing.core` and `routing.answers`, never
`routing.routers`, `routing.features` or `routing.evaluation`; the top-level `routing.rules` /
`routing.training`, evaluation, `operators/` and `pipelines/` may import it.
"""
