"""The source schema: SQLAlchemy 2.0 models (the one schema source) and the migration runner.

May import the foundation modules only.
"""
