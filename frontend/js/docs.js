// Starts Swagger UI on /docs (app/docs_page.py) from a file, so the page needs no inline script.
window.SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
