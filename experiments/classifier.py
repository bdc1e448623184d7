"""The small Fashion-MNIST convnet whose penultimate layer is the feature space of the Fréchet distance."""

import dataclasses

import keras
import numpy as np
from keras import layers

FEATURE_LAYER = "features"


def build_classifier(input_shape, num_classes=10, feature_dim=128):
    """Conv 32 -> pool -> conv 64 -> pool -> dense `feature_dim` (the features) -> class logits."""
    x = keras.Input(shape=input_shape, name="x")
    h = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_0")(x)
    h = layers.MaxPooling2D(name="pool_0")(h)
    h = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv_1")(h)
    h = layers.MaxPooling2D(name="pool_1")(h)
    h = layers.Flatten()(h)
    h = layers.Dense(feature_dim, activation="relu", name=FEATURE_LAYER)(h)
    logits = layers.Dense(num_classes, name="logits")(h)
    return keras.Model(x, logits, name="classifier")


@dataclasses.dataclass
class FeatureNet:
    """A trained classifier, its test accuracy, and its penultimate layer as a feature extractor."""

    model: keras.Model
    test_accuracy: float

    def features(self, x, batch_size=1000):
        """Images (n, 28, 28, 1) float in [0, 1] -> (n, feature_dim) penultimate activations."""
        extractor = keras.Model(self.model.input, self.model.get_layer(FEATURE_LAYER).output)
        x = np.asarray(x, np.float32)
        return np.concatenate(
            [keras.ops.convert_to_numpy(extractor(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )


def train_classifier(x_train, y_train, x_test, y_test, epochs, seed, batch_size=128, verbose=0):
    """Trains on uint8 images scaled to [0, 1]; returns a FeatureNet with its accuracy on (x_test, y_test)."""
    keras.utils.set_random_seed(seed)  # weight initialisation and shuffling
    model = build_classifier(x_train.shape[1:], num_classes=int(max(y_train.max(), y_test.max())) + 1)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(_unit(x_train), y_train, batch_size=batch_size, epochs=epochs, verbose=verbose)
    logits = model.predict(_unit(x_test), batch_size=1000, verbose=0)
    return FeatureNet(model, float(np.mean(np.argmax(logits, axis=1) == y_test)))


def _unit(x_uint8):
    return np.asarray(x_uint8, np.float32) / 255.0
