"""annoloop's engineer-side tools: ``annoloop.client`` (Python client, CLI verbs, Label Studio
interop). Nothing here imports the server (``app``) or the worker: the client needs httpx only."""
