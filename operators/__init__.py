"""Operators: Ray Data stages and expert runners, between the job (`pipelines/`) and `routing/`.

The top-level modules are the stages (`stages`, `cascade_stages`, `read_input`, `rebatch`,
`expert_worker`, `ledger`, `schema`); `runners/` holds one runner per expert kind. Operators
may import `routing/`, never `pipelines/`.
"""
