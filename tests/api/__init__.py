"""API tests: the in-process Flask app, its client and CLI runner, on SQLite and PostgreSQL."""
