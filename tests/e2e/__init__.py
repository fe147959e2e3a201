"""End-to-end tests: real server processes and real clients (every test here is marked e2e)."""
