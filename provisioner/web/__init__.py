"""HTTP layer: Flask blueprints and request handling (imports domain and store)."""
