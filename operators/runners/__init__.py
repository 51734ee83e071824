"""Expert runners: the code that turns a batch of rows into answers for one expert kind.

`base` is the runner contract, `hf_qa` (with `qa_windows`) the extractive reader,
`hf_causal` the local causal LM, `openai_compat` the OpenAI-compatible endpoint, `replay`
the recorded answers. Runners may import `routing/` and each other, nothing else of
`operators/`; the Ray Data stages in `operators/` and `pipelines/` may import them.
"""
