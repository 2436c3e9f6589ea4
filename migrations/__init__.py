"""Alembic migrations of optforge's database of record (version table ``optforge_alembic_version``).

The ini file lives inside the package so migrations work from an installed (non-editable) copy;
run them with ``optforge db upgrade`` or :func:`migrations.runner.upgrade`.
"""
