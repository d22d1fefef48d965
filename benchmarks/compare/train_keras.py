"""The reference job with Keras on TensorFlow-CPU: Conv2D(32, 3x3, relu) -> MaxPooling2D(2x2) ->
Flatten -> Dense(10, softmax), Adam(1e-3), sparse categorical cross-entropy, batch 32, shuffled
every epoch, `--threads` intra- and inter-op threads. `--variant xla` compiles the step with XLA
(`jit_compile=True`; Keras's default, "auto", leaves XLA off on a machine without a GPU). Prints one
JSON line per epoch and one with the test accuracy (see common.py)."""
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import common  # noqa: E402

args = common.parse_args("Keras", variants=("default", "xla"))

import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(args.threads)
tf.config.threading.set_inter_op_parallelism_threads(args.threads)
import keras  # noqa: E402

keras.utils.set_random_seed(args.seed)
x_train, y_train = common.load(args.data, "train", args.train_samples)
x_test, y_test = common.load(args.data, "t10k")

model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    keras.layers.Conv2D(32, (3, 3), activation="relu"),
    keras.layers.MaxPooling2D((2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
              jit_compile=True if args.variant == "xla" else "auto")
version = f"keras {keras.__version__} / tensorflow-cpu {tf.__version__}" + (" + XLA" if args.variant == "xla" else "")


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, as fit's own loop sees it (the first includes tracing)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.start
        common.emit(framework="keras", version=version,
                    run=args.run, epoch=epoch + 1, seconds=seconds, samples=len(x_train),
                    loss=float(logs["loss"]), accuracy=float(logs["accuracy"]))


model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, verbose=0,
          callbacks=[EpochTimer()])
loss, accuracy = model.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)
common.emit(framework="keras", run=args.run, test_loss=float(loss), test_accuracy=float(accuracy))
