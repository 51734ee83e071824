"""Benchmarks: the router benchmark on replay data and the SMART simulation.

`router_bench` fits every method on one replay set and judges it on another;
`smart_sim` replays SMART's published profiles (`smart_profiles`) through our profiler and
model mix. This is the top of `routing/`: it may import every other subpackage, and only
`pipelines/` (the `bench-router` and `smart` commands) imports it.
"""
