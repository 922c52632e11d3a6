"""The HTTP API (quart-trio), its bridge to hypercorn on the shared port, the web client."""
