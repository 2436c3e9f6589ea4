"""search: design space, Optuna studies, scheduler, pruner, leaderboard."""
