"""Adam with one fused kernel per variable on TensorFlow.

keras.optimizers.Adam updates each variable with about a dozen element-wise
ops, each a full pass over the variable; on a CPU those passes take a large
share of a small model's step (the MLP at batch 100: BENCHMARKS.md). On the
TensorFlow backend FusedAdam does the same update with TensorFlow's
ResourceApplyAdam kernel, one pass per variable. The formula is Keras's:
m += (g - m)(1 - beta_1); v += (g^2 - v)(1 - beta_2);
w -= lr_t m / (sqrt(v) + epsilon), lr_t = lr sqrt(1 - beta_2^t) / (1 - beta_1^t),
t = iterations + 1.

Elsewhere it is keras.optimizers.Adam: other backends, amsgrad, and updates
under a tf.distribute strategy with several replicas (whose variables the
raw kernel cannot address). Weight decay is applied by the base optimizer
before update_step, as for Adam.
"""

import keras


@keras.saving.register_keras_serializable(package="kvae")
class FusedAdam(keras.optimizers.Adam):
    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        t = keras.ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = keras.ops.cast(self.beta_1, dtype), keras.ops.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=keras.ops.power(beta_1, t),
            beta2_power=keras.ops.power(beta_2, t),
            lr=keras.ops.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=keras.ops.cast(self.epsilon, dtype),
            grad=keras.ops.cast(gradient, dtype),
        )


def _handle(variable):
    """The resource handle of a tf.Variable or of a Keras variable on TensorFlow."""
    return variable.value.handle if isinstance(variable, keras.Variable) else variable.handle
