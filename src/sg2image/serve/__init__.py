"""`sg2image serve`: an HTTP API (FastAPI) and a scene-graph editor page for a pipeline.

from sg2image.serve import ServeSettings, create_app
app = create_app(load_pipeline("path/to/pipeline"), ServeSettings(max_batch=8))
"""

from sg2image.serve.app import create_app
from sg2image.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
