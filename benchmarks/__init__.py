"""kvae benchmarks: training throughput, inference latency and time to quality,
measured side by side with a PyTorch reference and the keras.io-style VAE.

One command: `python -m benchmarks.run` (or `--quick` for a smoke run) writes
benchmarks/results.json and the generated section of BENCHMARKS.md.
"""
