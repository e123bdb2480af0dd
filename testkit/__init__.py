"""What the tests and the benchmarks share: servers started on loopback, fakes above the engine,
the turnout CLI run as a user runs it, the demo models' fixtures and one Parlant agent turn."""
