-- Optuna gets its own database: its tables (studies, trials, alembic_version) never meet ours.
CREATE DATABASE optuna OWNER optforge;
