"""Run the router: python -m services.router."""

from services.router.app import create_app
from shared.serve import serve
from shared.settings import RouterSettings

if __name__ == "__main__":
    settings = RouterSettings()
    serve(create_app(settings), settings.host, settings.http_port)
