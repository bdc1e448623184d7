"""The VAE argument as runnable, measured experiments.

`python -m kvae_experiments --out DIR [--quick]` runs three of them and writes
DIR/report.md with its figures beside it:

1. generation from random codes: autoencoder vs VAE on Fashion-MNIST, scored
   by a Fréchet distance in the features of a small classifier (generation.py);
2. a decoder turns N(0, I) into a ring (ring.py);
3. an RBM's Gibbs chains vs the VAE's single decoder pass (rbm.py).

Each module does one job; seeds are explicit arguments everywhere.
"""
