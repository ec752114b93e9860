"""What the tests and the benchmarks share, so that neither copies it nor imports the other.

- :mod:`tandem.testing.processes`: stop a subprocess as Ctrl-C does, pick a free port, wait for a condition.
- :mod:`tandem.testing.served`: ``tandem serve`` as a subprocess on a free port, once it answers.
- :mod:`tandem.testing.bundles`: tiny real bundles built in milliseconds without torch (needs ``onnx``).

Not part of Tandem's API, and no library module imports it (an import-linter contract).
"""
