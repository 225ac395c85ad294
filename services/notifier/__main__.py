"""Run the notifier: python -m services.notifier."""

from services.notifier.app import create_app
from shared.serve import serve
from shared.settings import NotifierSettings

if __name__ == "__main__":
    settings = NotifierSettings()
    serve(create_app(settings), settings.host, settings.http_port)
