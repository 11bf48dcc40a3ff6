"""The logged model's "model from code" loader: the model holds no pickled Python objects."""

import mlflow

from glove_exp.app.serving import GloveClassifier

mlflow.models.set_model(GloveClassifier())
