"""Tests of the benchmarks, reports and the cellbench command."""
