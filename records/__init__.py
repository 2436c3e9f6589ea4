"""records: the database of record (experiments, runs, reuse, recipes, leaderboard, benchmark reports).

No Optuna here: ``search`` (studies, the schedulers) builds on it, never the other way round.
"""
