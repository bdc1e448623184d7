"""What kvae's packages agree on, with no dependency but NumPy (in every install): installed as `kvae_contract`.

errors.py     one error family: each kind with its exit code (the command) and HTTP status (the server)
artifacts.py  the artifact contract of ARTIFACTS.md: tensor names, format version, folder layout, label and
              sampling conventions (tests/test_contract.py checks it against the page)
idx.py        the IDX reader of the original (Fashion-)MNIST files, and where Fashion-MNIST's files are
images.py     the NumPy tiling of images into one picture (kvae's figures, the server's PNG grids)

The library (kvae), the exporter (kvae_export), the runtime and server
(kvae_serving), the command (kvae_cli), the benchmarks and the tests import
these names from here and spell them nowhere else.
"""
