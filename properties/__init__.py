"""cellbench's conformance suite: Hypothesis properties of recurrent cells, for any backend."""
