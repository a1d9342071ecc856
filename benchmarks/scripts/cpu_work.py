"""The fixed amount of pure-Python work per item of the cpu benchmark, and its calibration.

``python cpu_work.py --calibrate 0.004`` prints the number of loops that take
about 4 ms here (the best of several timings, so a busy moment does not inflate it).
"""

import argparse
import time


def burn(loops):
    """Pure-Python integer arithmetic: holds the GIL, touches no memory to speak of."""
    x = 0
    for i in range(loops):
        x = (x * 31 + i) & 0xFFFF
    return x


def calibrate(seconds, trials=15, probe=100_000):
    """Loops that take ``seconds`` (best of ``trials`` timings of ``probe`` loops)."""
    burn(probe)  # warm up
    best = min(_time(probe) for _ in range(trials))
    return max(1, round(probe * seconds / best))


def _time(loops):
    t0 = time.perf_counter()
    burn(loops)
    return time.perf_counter() - t0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calibrate", type=float, required=True, metavar="SECONDS")
    print(calibrate(parser.parse_args().calibrate))
