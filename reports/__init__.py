"""cellbench's benchmarks and reports, and the `cellbench` command (reports.cli)."""
