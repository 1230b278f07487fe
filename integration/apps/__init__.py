"""Apps the fault tests run in worker processes."""
