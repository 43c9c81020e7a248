"""Scalar metrics written as TensorBoard event files and as JSON lines.

TensorBoard reads `events.out.tfevents.*` files: TFRecord framing (length,
masked CRC32C, payload, masked CRC32C) around `Event` protocol buffers. Scalars
need only a handful of protobuf fields, encoded here by hand so that cmjax does
not depend on TensorFlow. `metrics.jsonl` holds the same values for scripts.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Mapping

from cmjax import files

__all__ = ["MetricWriter", "masked_crc32c"]


def _crc32c_table() -> list[int]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_TABLE = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
  """The CRC32C (Castagnoli) of `data`, masked as TFRecord files store it."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  crc ^= 0xFFFFFFFF
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
  key = _varint((number << 3) | wire_type)
  if wire_type == 2:
    return key + _varint(len(payload)) + payload
  return key + payload


def _framed(data: bytes) -> bytes:
  """One TFRecord: length, masked CRC of the length, payload, masked CRC of the payload."""
  header = struct.pack("<Q", len(data))
  return (header + struct.pack("<I", masked_crc32c(header)) + data
          + struct.pack("<I", masked_crc32c(data)))


def _event(wall_time: float, step: int, *, file_version: str | None = None,
           scalars: Mapping[str, float] | None = None) -> bytes:
  """Encodes an `Event` (wall_time=1, step=2, file_version=3, summary=5)."""
  out = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
  if file_version is not None:
    out += _field(3, 2, file_version.encode())
  if scalars:
    values = b"".join(
        # Summary.Value: tag=1, simple_value=2 (float).
        _field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", value)))
        for tag, value in scalars.items()
    )
    out += _field(5, 2, values)
  return out


def _records(path: str) -> list[bytes]:
  """The payloads of a TFRecord file written by `MetricWriter` (a torn tail is dropped)."""
  with open(path, "rb") as f:
    raw = f.read()
  out, at = [], 0
  while at + 12 <= len(raw):
    (length,) = struct.unpack("<Q", raw[at:at + 8])
    end = at + 12 + length + 4
    if end > len(raw):
      break
    out.append(raw[at + 12:at + 12 + length])
    at = end
  return out


def _event_step(payload: bytes) -> int:
  """The step of an `Event` written by `_event` (wall_time first, then step)."""
  if payload[:1] != b"\x09" or payload[9:10] != b"\x10":
    return 0
  step, shift, at = 0, 0, 10
  while True:
    byte = payload[at]
    step |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return step
    shift, at = shift + 7, at + 1


class MetricWriter:
  """Appends scalars to a TensorBoard event file and `metrics.jsonl` in `logdir`.

  A stage resumed from the checkpoint of step `resume_step` keeps the rows
  logged up to that step and drops the later ones (logged after the
  checkpoint by the run that was interrupted, and about to be logged again),
  in one events file; a stage started afresh (`resume_step=0`) starts both
  files anew. Files are never written through a symlink. With
  `enabled=False` (every process but the first of a multi-process run) it
  writes nothing.
  """

  def __init__(self, logdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    if not enabled:
      return
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    olds = sorted(f for f in os.listdir(logdir) if f.startswith("events.out.tfevents."))
    kept = [r for f in olds for r in _records(os.path.join(logdir, f))
            if resume_step and 0 < _event_step(r) <= resume_step]
    jsonl = os.path.join(logdir, "metrics.jsonl")
    rows = []
    if resume_step and os.path.isfile(jsonl):
      with open(jsonl) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    path = os.path.join(logdir, name)
    files.write_atomic(path, lambda f: f.write(b"".join(
        _framed(r) for r in [_event(time.time(), 0, file_version="brain.Event:2")] + kept)),
                       binary=True)
    files.write_atomic(jsonl, lambda f: f.write("".join(rows)))
    for old in olds:
      if old != name:
        os.unlink(os.path.join(logdir, old))
    self._events = files.open_append(path, binary=True)
    self._jsonl = files.open_append(jsonl)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._events.write(_framed(_event(time.time(), step, scalars=scalars)))
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self.flush()

  def flush(self) -> None:
    if not self.enabled:
      return
    self._events.flush()
    self._jsonl.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self._events.close()
    self._jsonl.close()
