"""Sample quality against the test images: the Fréchet distance in the classifier's features, two ways.

"grey": the images as they are (decoder means, p(v|h)) vs the grey test images.
"binarized": every image set, real or generated, binarized the same way, x ~ Bernoulli(pixel): for
Bernoulli models (the VAE, the RBM) these are samples of the model itself, and the test images get the
project's fixed test binarization. The reference statistics are computed once.
"""

import numpy as np

from .frechet import frechet_distance, gaussian_stats
from kvae.data import pipeline


class Scorer:
    def __init__(self, featurenet, x_test_uint8, seed):
        self.featurenet = featurenet
        self.seed = seed
        self.reference = {
            "grey": gaussian_stats(featurenet.features(x_test_uint8 / 255.0)),
            "binarized": gaussian_stats(featurenet.features(pipeline.binarize_once(x_test_uint8))),
        }

    def score(self, images):
        """images (n, 28, 28, 1) in [0, 1] -> {"grey": distance, "binarized": distance}."""
        binary = (np.random.default_rng(self.seed).random(images.shape, dtype=np.float32) < images).astype(np.float32)
        return {
            "grey": self._distance(images, "grey"),
            "binarized": self._distance(binary, "binarized"),
        }

    def _distance(self, images, kind):
        return frechet_distance(*gaussian_stats(self.featurenet.features(images)), *self.reference[kind])
