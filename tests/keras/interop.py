"""Keras's side of the interoperability test: Keras reads what Mirror wrote and Mirror reads what
Keras wrote, for the reference CNN and a residual block with batch normalization (plain, and
synchronized on Mirror's side, which Keras on JAX refuses in a layer config); every pair of
predictions on a fixed batch must agree within ATOL. Mirror refuses a Keras file with a
regularizer, naming it.

usage: interop.py KERAS_INTEROP_EXE WORK_DIR
"""
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

ATOL = 1e-5


def build(arch):
    if arch == "regularized":
        return keras.Sequential([
            keras.Input((4,)),
            layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.01), bias_constraint=keras.constraints.NonNeg(),
                         name="dense"),
        ])
    if arch == "cnn":
        return keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, (3, 3), activation="relu"),
            layers.MaxPooling2D((2, 2)),
            layers.Flatten(),
            layers.Dense(10, activation="softmax"),
        ])
    x = keras.Input((12, 12, 3))
    y = layers.Conv2D(8, (3, 3), padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    shortcut = layers.Conv2D(8, (1, 1))(x)
    y = layers.Add()([shortcut, y])
    y = layers.MaxPooling2D((2, 2))(y)
    y = layers.GlobalAveragePooling2D()(y)
    y = layers.Dense(10, activation="softmax")(y)
    return keras.Model(x, y)


def batch(work, arch, shape):
    pixels = np.fromfile(os.path.join(work, f"batch_{arch}.u8"), dtype=np.uint8)
    return pixels.reshape((-1,) + shape).astype(np.float32) / 255.0


def compare(what, mirror, keras_pred):
    diff = float(np.max(np.abs(mirror.reshape(keras_pred.shape) - keras_pred)))
    # Outputs that hardly vary would hide a misplaced variable.
    ok = diff <= ATOL and float(np.std(keras_pred)) > 1e-2
    print(f"{'ok  ' if ok else 'FAIL'} {what}: max |mirror - keras| = {diff:.3g} over {keras_pred.size} outputs (std {np.std(keras_pred):.3g})")
    return ok


def refused_regularizer(exe, work):
    path = os.path.join(work, "regularized.keras")
    build("regularized").save(path)
    run = subprocess.run([exe, "predict-model", path, os.path.join(work, "batch_cnn.u8"), os.path.join(work, "r.pred")],
                         capture_output=True, text=True)
    want = "layer 'dense' has kernel_regularizer L2 (l2=0.01), which Mirror does not implement"
    ok = run.returncode == 1 and want in run.stderr and path in run.stderr
    print(f"{'ok  ' if ok else 'FAIL'} Mirror load_model(Keras's .keras with a regularizer): exit {run.returncode}: {run.stderr.strip()}")
    return ok


def main():
    exe, work = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(7)
    ok = True
    for arch in ("cnn", "res", "res_sync"):
        subprocess.run([exe, "write", arch, work], check=True)
        mirror_pred = np.fromfile(os.path.join(work, f"mirror_{arch}.pred"), dtype=np.float32)
        # Keras reads Mirror's files.
        model = keras.saving.load_model(os.path.join(work, f"mirror_{arch}.keras"))
        x = batch(work, arch, model.input_shape[1:])
        ok &= compare(f"{arch}: Keras load_model(Mirror's .keras)", mirror_pred, model.predict(x, verbose=0))
        model = build(arch)
        model.load_weights(os.path.join(work, f"mirror_{arch}.weights.h5"))
        ok &= compare(f"{arch}: Keras load_weights(Mirror's .weights.h5)", mirror_pred, model.predict(x, verbose=0))
        # Mirror reads Keras's files (random weights; moving variances positive).
        model = build(arch)
        model.set_weights([
            (rng.uniform(0.5, 1.5, w.shape) if "variance" in v.path else rng.uniform(-0.3, 0.3, w.shape)).astype(np.float32)
            for v, w in zip(model.weights, model.get_weights())
        ])
        keras_pred = model.predict(x, verbose=0)
        keras_file, weights_file = (os.path.join(work, f"keras_{arch}{ext}") for ext in (".keras", ".weights.h5"))
        model.save(keras_file)
        model.save_weights(weights_file)
        out = os.path.join(work, f"mirror_from_keras_{arch}.pred")
        batch_file = os.path.join(work, f"batch_{arch}.u8")
        subprocess.run([exe, "predict-model", keras_file, batch_file, out], check=True)
        ok &= compare(f"{arch}: Mirror load_model(Keras's .keras)", np.fromfile(out, dtype=np.float32), keras_pred)
        subprocess.run([exe, "predict-weights", arch, weights_file, batch_file, out], check=True)
        ok &= compare(f"{arch}: Mirror load_weights(Keras's .weights.h5)", np.fromfile(out, dtype=np.float32), keras_pred)
    ok &= refused_regularizer(exe, work)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
