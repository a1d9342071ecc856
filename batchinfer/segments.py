"""The segment format of a remote output folder (see :mod:`batchinfer.remote_output`): names, encoding, the chain.

A segment ``.batchinfer/segments/<seq>-<run>.seg`` is one immutable object: a JSON header line
(``seq``, ``run``, ``prev`` = [seq, run] of the segment it follows, and ``pieces``: each piece's
file, offset and length) then the pieces' bytes. One PUT is atomic, so a segment is whole or absent.
A segment *continues* the record when it follows the last one applied (by seq and run) and each
piece of an append-only file starts exactly where that file ends; anything else (a zombie run's
segment, one after a gap, a torn one) is not part of the record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from batchinfer.layout import STATE_DIR

JOURNAL = f"{STATE_DIR}/journal.jsonl"
PARTS = f"{STATE_DIR}/parts"
SEGMENTS = f"{STATE_DIR}/segments"
BASE = f"{STATE_DIR}/base.json"
PACK = f"{STATE_DIR}/parts.pack"  # Parquet: every Arrow part, in the segment format (the base of the parts)
_SEGMENT_NAME = re.compile(r"^(\d{8})-([0-9A-Za-z]{1,64})\.seg$")
_PART_NAME = re.compile(rf"^{re.escape(PARTS)}/[0-9-]{{9,29}}\.arrow$")


def encode_segment(header: dict[str, Any], pieces: list[bytes]) -> bytes:
    """One segment object: the header as a JSON line, then the pieces' bytes."""
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + b"".join(pieces)


def decode_segment(data: bytes) -> tuple[dict[str, Any], list[tuple[str, int, bytes]]]:
    """(header, [(file, offset, bytes)]) of a segment; ValueError for anything not whole or not ours."""
    line, newline, body = data.partition(b"\n")
    if not newline:
        raise ValueError("no header")
    header = json.loads(line)
    if not isinstance(header, dict) or not isinstance(header.get("pieces"), list):
        raise ValueError("not a segment header")
    pieces, at = [], 0
    for piece in header["pieces"]:
        name, offset, length = piece["file"], piece["offset"], piece["length"]
        if not (isinstance(name, str) and type(offset) is int and type(length) is int and offset >= 0 <= length):
            raise ValueError("a bad piece")
        pieces.append((name, offset, body[at:at + length]))
        at += length
    if at != len(body):
        raise ValueError("torn: its length is not its pieces'")
    return header, pieces


def segment_name(seq: int, run: str) -> str:
    """``.batchinfer/segments/00000012-<run>.seg``."""
    return f"{SEGMENTS}/{seq:08d}-{run}.seg"


def segment_seq(rel: str) -> int | None:
    """The seq of the segment object ``rel`` (a path in the folder), or None when it is not a segment's name."""
    match = _SEGMENT_NAME.match(rel.rsplit("/", 1)[-1])
    return int(match[1]) if match else None


def is_part(name: str) -> bool:
    """Whether ``name`` is one of Parquet's Arrow parts (``.batchinfer/parts/<n>.arrow``)."""
    return bool(_PART_NAME.match(name))


def candidates(rels: list[str], base_seq: int) -> tuple[dict[int, list[str]], list[str]]:
    """The segment objects ``rels`` by seq, those after the base only, newest run's first (run ids start
    with the time the run began: a zombie's segment written after a takeover never continues the chain
    the new run follows); and those at or before the base (stale: the base includes them)."""
    by_seq: dict[int, list[str]] = {}
    stale = []
    for rel in rels:
        seq = segment_seq(rel)
        if seq is None:
            continue
        if seq <= base_seq:
            stale.append(rel)
        else:
            by_seq.setdefault(seq, []).append(rel)
    return {seq: sorted(names, reverse=True) for seq, names in sorted(by_seq.items())}, stale


def continues(header: dict[str, Any], pieces: list[tuple[str, int, bytes]], seq: int, prev: list[Any],
              ends: dict[str, int], part_size: Callable[[str], int | None]) -> bool:
    """Whether a decoded segment is the one numbered ``seq`` that follows ``prev`` ([seq, run]):
    each piece of an append-only file (``ends``: their restored lengths) starts at its end, each
    other piece is a whole Arrow part (not yet restored, or restored with the same length)."""
    if header.get("seq") != seq or header.get("prev") != prev:
        return False
    for name, offset, data in pieces:
        if name in ends:
            if offset != ends[name]:
                return False
        elif not is_part(name) or offset != 0:
            return False
        elif (size := part_size(name)) is not None and size != len(data):
            return False
    return True


def last_end(journal_bytes: bytes) -> int:
    """The row file's length after the last of these journal lines."""
    last = journal_bytes.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return int(json.loads(last)["end"])
