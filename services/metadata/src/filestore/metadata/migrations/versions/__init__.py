"""Revision files: one schema change each, valid on SQLite and PostgreSQL alike."""
