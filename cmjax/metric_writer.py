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


class MetricWriter:
  """Appends scalars to a TensorBoard event file and `metrics.jsonl` in `logdir`.

  With `enabled=False` (every process but the first of a multi-process run)
  it writes nothing.
  """

  def __init__(self, logdir: str, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    os.makedirs(logdir, exist_ok=True)
    self.logdir = logdir
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
    self._events = open(os.path.join(logdir, name), "ab")
    self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")
    self._write_record(_event(time.time(), 0, file_version="brain.Event:2"))

  def _write_record(self, data: bytes) -> None:
    header = struct.pack("<Q", len(data))
    self._events.write(header + struct.pack("<I", masked_crc32c(header)))
    self._events.write(data + struct.pack("<I", masked_crc32c(data)))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._write_record(_event(time.time(), step, scalars=scalars))
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
