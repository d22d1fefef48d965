#!/usr/bin/env python3
"""Expected parameters of Keras 3's optimizers after each of several steps, and Keras 3's
learning-rate schedules at chosen iterations, computed with NumPy in float64 from fixed float32
inputs and written as C++ arrays for tests/test_optimizers.cpp. The update rules are Keras 3's
(keras/src/optimizers/{sgd,adam,adamw,rmsprop,base_optimizer}.py, and
keras/src/optimizers/schedules/learning_rate_schedule.py), written here independently of
Mirror's code; the tests need no Python.

Regenerate (needs numpy):
    python3 tests/reference/keras_optimizers.py > tests/reference/keras_optimizers.inc
"""
import math

import numpy as np

rng = np.random.RandomState(20261129)
STEPS = 4
# Three variables of one flat buffer: (name, size). Keras matches exclude_from_weight_decay
# against the variable's name.
VARIABLES = [("kernel", 3), ("bias", 4), ("gamma", 2)]
COUNT = sum(n for _, n in VARIABLES)


def f32(x):
    """Keras holds hyper-parameters as float32 variables: use the float32 value in float64."""
    return float(np.float32(x))


def emit(name, values, kind="float"):
    flat = np.asarray(values).ravel()
    if kind == "float":
        body = ", ".join(repr(float(np.float32(v))) + "f" for v in flat)
        print(f"inline constexpr float {name}[] = {{{body}}};")
    else:
        body = ", ".join(repr(float(v)) for v in flat)
        print(f"inline constexpr double {name}[] = {{{body}}};")


P0 = rng.uniform(-1, 1, COUNT).astype(np.float32)
GRADS = rng.normal(0, 1, (STEPS, COUNT)).astype(np.float32)


def split(flat):
    out, start = [], 0
    for _, n in VARIABLES:
        out.append(flat[start:start + n])
        start += n
    return out


def clip(grads, clipnorm=0, clipvalue=0, global_clipnorm=0):
    """base_optimizer._clip_gradients: one of the three."""
    if clipnorm:
        return [g * clipnorm / max(np.sqrt((g * g).sum()), clipnorm) for g in grads]
    if global_clipnorm:
        norm = np.sqrt(sum((g * g).sum() for g in grads))
        return [g * global_clipnorm * min(1 / norm, 1 / global_clipnorm) for g in grads]
    if clipvalue:
        return [np.clip(g, -clipvalue, clipvalue) for g in grads]
    return grads


def run(rule, lr, weight_decay=0, exclude=(), clipnorm=0, clipvalue=0, global_clipnorm=0, **h):
    params = [p.astype(np.float64) for p in split(P0)]
    state = [dict() for _ in params]
    history = []
    lr = f32(lr)
    wd = f32(weight_decay)
    for t in range(STEPS):
        grads = clip([g.astype(np.float64) for g in split(GRADS[t])], f32(clipnorm), f32(clipvalue), f32(global_clipnorm))
        for k, (p, g) in enumerate(zip(params, grads)):
            if wd and VARIABLES[k][0] not in exclude:  # base_optimizer._apply_weight_decay
                p -= p * wd * lr
            rule(p, g, state[k], lr, t, **h)
        history.append(np.concatenate(params))
    return np.array(history)


def sgd(p, g, s, lr, t, momentum=0.0, nesterov=False):
    if momentum == 0:
        p -= lr * g
        return
    m = s.setdefault("m", np.zeros_like(p))
    m[:] = -g * lr + m * f32(momentum)
    if nesterov:
        p += -g * lr + m * f32(momentum)
    else:
        p += m


def adam(p, g, s, lr, t, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
    b1, b2, eps = f32(beta_1), f32(beta_2), f32(epsilon)
    m = s.setdefault("m", np.zeros_like(p))
    v = s.setdefault("v", np.zeros_like(p))
    step = t + 1
    alpha = lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
    m += (g - m) * (1 - b1)
    v += (g * g - v) * (1 - b2)
    if amsgrad:
        vhat = s.setdefault("vhat", np.zeros_like(p))
        vhat[:] = np.maximum(vhat, v)
        v = vhat
    p -= m * alpha / (np.sqrt(v) + eps)


def rmsprop(p, g, s, lr, t, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    rho, eps = f32(rho), f32(epsilon)
    vel = s.setdefault("velocity", np.zeros_like(p))
    vel[:] = rho * vel + (1 - rho) * g * g
    if centered:
        avg = s.setdefault("average", np.zeros_like(p))
        avg[:] = rho * avg + (1 - rho) * g
        denominator = vel - avg * avg + eps
    else:
        denominator = vel + eps
    increment = lr * g / np.sqrt(denominator)
    if momentum > 0:
        mom = s.setdefault("momentum", np.zeros_like(p))
        mom[:] = f32(momentum) * mom + increment
        p -= mom
    else:
        p -= increment


CASES = {
    "Sgd": run(sgd, 0.1),
    "SgdMomentum": run(sgd, 0.1, momentum=0.9),
    "SgdNesterov": run(sgd, 0.1, momentum=0.9, nesterov=True),
    "SgdWeightDecay": run(sgd, 0.1, weight_decay=0.05, momentum=0.5),
    "SgdClipnorm": run(sgd, 0.1, clipnorm=0.5),
    "SgdClipvalue": run(sgd, 0.1, clipvalue=0.3),
    "Adam": run(adam, 0.01),
    "AdamAmsgrad": run(adam, 0.01, amsgrad=True),
    "AdamGlobalClipnorm": run(adam, 0.01, global_clipnorm=0.7),
    "AdamW": run(adam, 0.01, weight_decay=0.004),
    "AdamWExcluded": run(adam, 0.01, weight_decay=0.1, exclude=("bias", "gamma"), amsgrad=True),
    "Rmsprop": run(rmsprop, 0.01),
    "RmspropCentered": run(rmsprop, 0.01, rho=0.8, momentum=0.5, centered=True, clipnorm=1.0),
}


# ---- schedules (learning_rate_schedule.py), at chosen iterations ----

ITERATIONS = [0, 1, 5, 9, 10, 11, 25, 50, 99, 100, 150, 1000]


def exponential(i, initial, decay_steps, rate, staircase):
    p = i / decay_steps
    return initial * rate ** (math.floor(p) if staircase else p)


def piecewise(i, boundaries, values):
    for b, v in zip(boundaries, values):
        if i <= b:
            return v
    return values[-1]


def cosine(i, initial, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    def decay(step, from_lr):
        decayed = 0.5 * (1 + math.cos(math.pi * step / decay_steps))
        return from_lr * ((1 - alpha) * decayed + alpha)
    if warmup_target is None:
        return decay(min(i, decay_steps), initial)
    i = min(i, decay_steps + warmup_steps)
    if i < warmup_steps:
        return (warmup_target - initial) * (i / warmup_steps) + initial
    return decay(i - warmup_steps, warmup_target)


def polynomial(i, initial, decay_steps, end=0.0001, power=1.0, cycle=False):
    if cycle:
        decay_steps = decay_steps * (1 if i == 0 else math.ceil(i / decay_steps))
    else:
        i = min(i, decay_steps)
    return (initial - end) * (1 - i / decay_steps) ** power + end


SCHEDULES = {
    "Exponential": [exponential(i, 0.1, 10, 0.5, False) for i in ITERATIONS],
    "ExponentialStaircase": [exponential(i, 0.1, 10, 0.5, True) for i in ITERATIONS],
    "Piecewise": [piecewise(i, [10, 100], [1.0, 0.5, 0.1]) for i in ITERATIONS],
    "Cosine": [cosine(i, 0.1, 100, alpha=0.1) for i in ITERATIONS],
    "CosineWarmup": [cosine(i, 0.0, 90, warmup_target=0.2, warmup_steps=10) for i in ITERATIONS],
    "Polynomial": [polynomial(i, 0.1, 100, power=2.0) for i in ITERATIONS],
    "PolynomialCycle": [polynomial(i, 0.1, 100, end=0.01, cycle=True) for i in ITERATIONS],
}

print("// Generated by tests/reference/keras_optimizers.py from fixed inputs; do not edit.")
print("// Regenerate: python3 tests/reference/keras_optimizers.py > tests/reference/keras_optimizers.inc")
print("#pragma once")
print("#include <cstdint>")
print("namespace mirror::keras_reference {")
print(f"inline constexpr int kOptimizerSteps = {STEPS}, kOptimizerCount = {COUNT};")
print("inline constexpr int64_t kVariableBounds[] = {" +
      ", ".join(str(b) for b in np.cumsum([0] + [n for _, n in VARIABLES])) + "};")
print("inline constexpr const char* kVariableNames[] = {" + ", ".join(f'"{n}"' for n, _ in VARIABLES) + "};")
emit("kInitialParams", P0)
emit("kGradients", GRADS)
for name, history in CASES.items():
    emit(f"k{name}Params", history, "double")
print("inline constexpr int64_t kScheduleIterations[] = {" + ", ".join(str(i) for i in ITERATIONS) + "};")
for name, values in SCHEDULES.items():
    emit(f"k{name}Rates", values, "double")
print("}  // namespace mirror::keras_reference")
