"""Database: engine and session factory, ORM models, migrations."""
