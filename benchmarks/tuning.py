"""Candidates measured by benchmarks.tune that kvae's own code does not use (yet).

FusedAdam: Keras 3's Adam with each variable's update done by TensorFlow's
fused ResourceApplyAdam kernel (one pass over the variable) instead of the
eleven element-wise ops of keras.optimizers.Adam.update_step. Same formula:
m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr_t m / (sqrt(v) + eps)
with lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), t = iterations + 1.
TensorFlow backend, no amsgrad, no weight decay. It lives here because the
optimizer belongs to kvae/train.py, which this benchmark does not own.
"""

import keras
import tensorflow as tf


class FusedAdam(keras.optimizers.Adam):
    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        t = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(m), v=_handle(v),
            beta1_power=tf.pow(tf.cast(self.beta_1, dtype), t), beta2_power=tf.pow(tf.cast(self.beta_2, dtype), t),
            lr=lr, beta1=tf.cast(self.beta_1, dtype), beta2=tf.cast(self.beta_2, dtype),
            epsilon=tf.cast(self.epsilon, dtype), grad=tf.cast(gradient, dtype),
        )


def _handle(variable):
    """The resource handle of a tf.Variable or of a Keras variable on TensorFlow."""
    return variable.handle if isinstance(variable, tf.Variable) else variable.value.handle
