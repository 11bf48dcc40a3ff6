"""Where models logged before the layers (glove-exp <= d4fc811) find their pyfunc class: their
``mlflow_model.py`` imports ``glove_exp.serving.GloveClassifier``."""

from glove_exp.app.serving import GloveClassifier

__all__ = ["GloveClassifier"]
