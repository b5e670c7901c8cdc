"""``/docs``: Swagger UI from an installed package, served by the API itself.

FastAPI's own page loads swagger-ui from a CDN and starts it with an inline script, which the
pages' CSP refuses and which no one should have to trust in production. Here the files come
from the ``fastapi-swagger`` package (Swagger UI 5, which reads OpenAPI 3.1; only its files
are used, at ``/docs/assets``), the page starts it with ``frontend/js/docs.js``,
and the page's own CSP allows what Swagger UI needs beyond the site's: inline style attributes
(its React components set them) and ``data:`` images.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>annoloop API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/js/docs.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    assets = files("fastapi_swagger") / "resources"
    app.mount("/docs/assets", StaticFiles(directory=str(assets)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_PAGE, headers={"content-security-policy": DOCS_CSP})
