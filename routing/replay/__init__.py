"""Recorded expert answers and the figures every router is judged by.

`data` loads and splits replay directories (recorded answers to SQuAD questions, scored once);
`metrics` turns routing choices into mean F1 / cost points, hulls and reference points. It
may import `routing.core` and `routing.answers`; calibration, routers, cascades and
evaluation build on it.
"""
