"""search: design space, Optuna studies, schedulers (studies, benchmarks), pruner."""
