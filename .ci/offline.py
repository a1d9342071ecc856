"""Run a command with loopback up: ``unshare --net python .ci/offline.py CMD...`` (CI's network-off runs).

A new network namespace has only a loopback interface, and it is down; the tests' servers listen on
127.0.0.1, so it is brought up here (the SIOCSIFFLAGS ioctl: no dependency on iproute2's ``ip``).
Nothing outside is reachable: a test that tried would fail instead of quietly using the network.
"""

import fcntl
import os
import socket
import struct
import sys

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    request = struct.pack("16sH", b"lo", 0)
    flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
os.execvp(sys.argv[1], sys.argv[1:])
