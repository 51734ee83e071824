"""What an expert's answer is: span decoding, prompts, SQuAD scoring and row checks.

Pure functions of text and logits (`spans`, `prompting`, `squad`, `validation`) that every
expert runner, scorer and router builds on. This is the bottom of `routing/`: it imports
nothing else from `routing/` (nor Ray, nor torch), and every other subpackage, `operators/`
and `pipelines/` may import it.
"""
