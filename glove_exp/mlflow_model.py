"""The MLflow "model from code" file: ``mlflow.pyfunc.log_model(python_model=<this file>)``
loads it to get the pyfunc, so the logged model holds no pickled Python objects."""

import mlflow

from glove_exp.app.serving import GloveClassifier

mlflow.models.set_model(GloveClassifier())
