"""The operator console: the fleet in a browser, served by the cloud beside its API (``mount``).

    app.py         ``mount(app, ctx)``: login and logout, static assets, the error pages, the feature pages
    session.py     sessions behind an HttpOnly, SameSite=Strict cookie with an expiry; CSRF tokens
    views.py       the ``VIEWS`` table: each page and action declares its action and site like an API route
    api.py         the API called in process with the session's token: every read and write is an API call
    charts.py      metric charts as server-drawn SVG
    fleet.py       overview, devices, one device, one site
    operations.py  enrollment queue, releases, alerts, audit log
    rollouts.py    rollout list, wizard with dry run, live progress with pause, resume, abort and revert

Pages are rendered on the server (``templates/``, Jinja2); htmx (``static/htmx.min.js``, vendored from npm
with its license in ``static/LICENSES``) makes the live parts poll and the buttons post without full
reloads. Nothing is fetched from another host.
"""

from cloud.console.app import Console, mount
from cloud.console.views import VIEWS, View

__all__ = ["VIEWS", "Console", "View", "mount"]
