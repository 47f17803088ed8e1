"""pytest-benchmark suite of cellbench (not collected by plain `pytest`; `cellbench run` runs it)."""
