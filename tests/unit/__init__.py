"""Unit tests: pure rules, no app, no database, no server; they run in seconds."""
