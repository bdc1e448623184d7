"""What kvae's packages agree on, with no dependency at all: installed as `kvae_contract`.

errors.py     one error family: each kind with its exit code (the command) and HTTP status (the server)
artifacts.py  the artifact contract of ARTIFACTS.md: tensor names, format version, folder layout, sampling rules

The library (kvae), the exporter (kvae_export), the runtime and server
(kvae_serving), the command (kvae_cli), the benchmarks and the tests import
these names from here and spell them nowhere else.
"""
