"""moto's S3 server in a process of its own, on 127.0.0.1, for the storage benchmark.

    python s3_server.py

Starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1 at a free port, prints
``http://127.0.0.1:PORT`` as the first line of stdout, and serves until its
stdin is closed or it gets SIGTERM/SIGINT. werkzeug's per-request log lines are
turned off (they cost the server CPU that the measured jobs would compete with).
"""

import logging
import signal
import sys
import threading

from moto.server import ThreadedMotoServer


def main():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # the parent closing our stdin (or dying) also stops us
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(f"http://{host}:{port}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
