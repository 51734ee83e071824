"""The online endpoint: a Ray Serve app (`app`) answering HTTP requests (`request_body`).

It may import `operators/`, `routing/` and the job's shared modules (`pipelines.batch_job`,
`pipelines.preflight_checks`, `pipelines.resources`); only `pipelines.cli` imports it.
"""
