"""Database access: transactions, the SQLite group writer, locks, queries."""
