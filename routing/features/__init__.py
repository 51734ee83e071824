"""The pre-answer router's inputs: text features, encoder layers and their selection.

`featurizer.RouterFeaturizer` combines the cheap `text_features` with `encoder` layers chosen
by `layer_selection`. It may import `routing.core` and `routing.answers` only; routers and
evaluation (and the CLI, for the default encoder) may import it.
"""
