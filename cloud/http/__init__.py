"""The operator HTTP API (FastAPI, served by uvicorn in the cloud's event loop).

    context.py   ``ApiContext``: the one object the app and every route module are built from
    app.py       ``create_app(ctx)``: the routes, the access check, the one error handler
    errors.py    the error handler: the HTTP status from the error's class (``common.errors``)
    access.py    who is asking, may they, and the audit log of every mutating request
    server.py    ``serve_api``: uvicorn in the running loop, on a socket bound up front

Route modules, one per feature: ``devices``, ``alerts``, ``fleet``, ``releases``, ``security``,
``rollouts``. Each is ``routes(ctx) -> APIRouter``; the work is the feature's (``cloud.<feature>``).
"""

from cloud.http.app import create_app
from cloud.http.context import ApiContext, ApiHooks, FleetOptions
from cloud.http.server import ServedApi, serve_api

__all__ = ["ApiContext", "ApiHooks", "FleetOptions", "ServedApi", "create_app", "serve_api"]
