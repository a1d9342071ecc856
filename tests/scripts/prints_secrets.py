"""Shows every secret it can, everywhere batchinfer might write it: as careless scripts do.

init() prints all of os.environ (as Azure's own 2a sample does), writes one secret in two
pieces (a value split across two writes), has a child process print one, and logs one;
run() fails the file holding 'bad.txt' with a message holding a secret, and returns each
file's content with PARTITION_KEYS's value (not a secret: it must stay readable).
"""

import os
import subprocess
import sys

import batchinfer


def init():
    for name, value in sorted(os.environ.items()):
        print(f"{name}={value}")
    token = os.environ["MY_API_TOKEN"]
    half = len(token) // 2
    sys.stdout.write("split token: " + token[:half])
    sys.stdout.flush()  # the first half reaches the log's pipe on its own
    sys.stdout.write(token[half:] + "\n")
    sys.stdout.flush()
    subprocess.run(["sh", "-c", 'echo "child sees $AWS_SECRET_ACCESS_KEY"; echo "child stderr $MY_API_TOKEN" >&2'],
                   check=True)
    os.write(2, f"raw fd 2: {os.environ['STORE_SECRET']}\n".encode())
    batchinfer.logger().warning("logged: %s", os.environ["STORE_SECRET"])
    print(f"partition keys: {os.environ['PARTITION_KEYS']}")


def run(mini_batch):
    names = [open(p).read() for p in mini_batch]
    if "bad.txt" in names:
        raise ValueError(f"cannot score bad.txt with token {os.environ['MY_API_TOKEN']} "
                         f"and key {os.environ['STORE_SECRET']}")
    print(f"scoring {names} with {os.environ['AWS_SECRET_ACCESS_KEY']}")
    return [f"{name} {os.environ['PARTITION_KEYS']}" for name in names]
