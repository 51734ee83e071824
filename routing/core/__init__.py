"""The job's shared ground: the config schema, cost arithmetic, storage, model sources and
the files every router checkpoint shares.

`config` is the one schema of every YAML file; `costs`, `storage`, `model_sources` and
`checkpoint_files` are what the batch job, the online endpoint and the trainers all need.
It may import only `routing.answers` (the schema checks prompt templates with
`routing.answers.prompting`); every other subpackage of `routing/`, `operators/` and
`pipelines/` may import it.
"""
