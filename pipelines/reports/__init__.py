"""Run reports: the figures of a finished run (`data`), their HTML page (`html`), writing both (`write`).

It may import `routing/`, `operators.schema` and the job's own files (`pipelines.summary`,
`pipelines.shards`); the CLI and the job call it after a run, and it never imports
`pipelines.cli` or `pipelines.serve`.
"""
