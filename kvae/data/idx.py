"""Reader for the IDX format of the original (Fashion-)MNIST files: kvae_contract.idx, re-exported here.

Its home is the dependency-free kvae_contract, so that the benchmarks' PyTorch
side reads the files with the same code without importing kvae (TensorFlow).
"""

from kvae_contract.errors import DataError  # noqa: F401  (re-exported: kvae.data.DataError)
from kvae_contract.idx import UBYTE, read_idx  # noqa: F401  (re-exported: kvae.data.read_idx)
