"""Pipelines: the job, its commands, the online endpoint and the reports; the top layer.

The top-level modules are the batch job and what it shares with the endpoint (`batch_job`,
`resources`, `preflight_checks`, `input_files`, `shards`, `summary`, `profiling`, `demo`,
`exit_codes`); `cli/`, `serve/` and `reports/` sit on them. `pipelines/` may import
`operators/` and `routing/`; nothing imports `pipelines/`.
"""
