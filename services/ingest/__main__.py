"""Run the edge: python -m services.ingest."""

from services.ingest.app import create_app
from shared.serve import serve
from shared.settings import IngestSettings

if __name__ == "__main__":
    settings = IngestSettings()
    serve(create_app(settings), settings.host, settings.http_port)
