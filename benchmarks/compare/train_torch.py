"""The reference job with PyTorch on the CPU: Conv2d(1, 32, 3) + ReLU -> MaxPool2d(2) -> Flatten
-> Linear(5408, 10), cross-entropy on the logits (the same math as Keras's softmax + sparse
categorical cross-entropy), Adam(1e-3, eps 1e-7 as Keras), batch 32, a new permutation every epoch,
Keras's initialisation (Glorot-uniform weights, zero biases), `--threads` threads. The batches are
slices of tensors held in memory (no DataLoader), the fastest plain loop. `--variant compile`
compiles the model with `torch.compile` (Inductor's C++ code on the CPU, forward and backward);
`--variant compile-channels-last` also keeps the images and weights channels-last. The first epoch
includes the compilation.
Prints one JSON line per epoch and one with the test accuracy (see common.py)."""
import time

import common

args = common.parse_args("PyTorch", variants=("eager", "compile", "compile-channels-last"))

import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(args.threads)
torch.set_num_interop_threads(args.threads)
torch.manual_seed(args.seed)

x_train, y_train = common.load(args.data, "train", args.train_samples)
x_test, y_test = common.load(args.data, "t10k")
# PyTorch's convolutions take NCHW.
x_train = torch.from_numpy(x_train).permute(0, 3, 1, 2).contiguous()
x_test = torch.from_numpy(x_test).permute(0, 3, 1, 2).contiguous()
y_train, y_test = torch.from_numpy(y_train), torch.from_numpy(y_test)

model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(13 * 13 * 32, 10))
for module in model:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
loss_fn = nn.CrossEntropyLoss()
version = f"torch {torch.__version__}"
net = model
if args.variant == "compile-channels-last":
    model = model.to(memory_format=torch.channels_last)
    x_train = x_train.contiguous(memory_format=torch.channels_last)
    x_test = x_test.contiguous(memory_format=torch.channels_last)
    version += " channels-last"
if args.variant.startswith("compile"):
    net = torch.compile(model)
    version += " compiled"

count = len(x_train)
for epoch in range(args.epochs):
    model.train()
    start = time.perf_counter()
    order = torch.randperm(count)
    loss_sum, correct = 0.0, 0
    for begin in range(0, count, args.batch_size):
        index = order[begin:begin + args.batch_size]
        x, y = x_train[index], y_train[index]
        optimizer.zero_grad(set_to_none=True)
        logits = net(x)
        loss = loss_fn(logits, y)
        loss.backward()
        optimizer.step()
        loss_sum += loss.item() * len(index)
        correct += (logits.argmax(1) == y).sum().item()
    seconds = time.perf_counter() - start
    common.emit(framework="pytorch", version=version, run=args.run, epoch=epoch + 1, seconds=seconds, samples=count,
                loss=loss_sum / count, accuracy=correct / count)

model.eval()
loss_sum, correct = 0.0, 0
with torch.no_grad():
    for begin in range(0, len(x_test), args.batch_size):
        x, y = x_test[begin:begin + args.batch_size], y_test[begin:begin + args.batch_size]
        logits = net(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
common.emit(framework="pytorch", run=args.run, test_loss=loss_sum / len(x_test), test_accuracy=correct / len(x_test))
