"""MLflow models-from-code entry point: the logged model is this file plus its config and artifacts."""

from mlflow.models import set_model

from pipelines.models.pyfunc import PopularityModel

set_model(PopularityModel())
