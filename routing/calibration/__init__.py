"""Choosing a routing setting with statistics: lambda policies, binomial bounds, SMART's mix.

`policy` picks the lambda (or accuracy target) of a routing rule, `guarantees` holds the exact
Clopper-Pearson bounds, `model_mix` and `profiling_policy` are SMART's model mix and
when-to-stop-profiling rule. Numbers in, decisions out: no models, no I/O. It may import
`routing.replay`, `routing.core` and `routing.answers`; routers, cascades, evaluation and the
pipelines may import it.
"""
