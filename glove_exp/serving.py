"""Where models logged before the layers (glove-exp <= d4fc811) import their pyfunc class from."""

from glove_exp.app.serving import GloveClassifier

__all__ = ["GloveClassifier"]
