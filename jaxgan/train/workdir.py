"""A run's folder: writable, and held by one run at a time.

Two runs in one workdir would write the same checkpoint steps and interleave their
metrics; two processes saving one step can leave a checkpoint neither wrote whole. So a
run holds its workdir from its set-up (`jaxgan.train.runs.start`) to the end of its
training loop, through ``WORKDIR/run.lock``:

* an exclusive ``flock`` on the file, which the kernel drops when the process ends, even
  by ``kill -9``; a second run on this host that finds it taken stops at once, naming the
  run that holds it (host, process id, start time, command);
* the file's content names the holder, so a lock left by a run that died on this host is
  taken over with a warning (the resume goes on), and one left by a run on another host,
  whose liveness this host cannot see, is an error that says how to override it.

In a multi-process run, process 0 holds the workdir for all of them and tells the others
whether it could; they share the folder as they always do.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys

import jax
import numpy as np
from absl import logging

LOCK_FILE = "run.lock"

# workdir (absolute) -> the file descriptor holding its flock (-1 in the other processes
# of a multi-process run, for which process 0 holds it)
_held: dict[str, int] = {}


class WorkdirInUse(RuntimeError):
  """Another run holds the workdir."""


def check_writable(workdir: str) -> None:
  """Fails before any work if the run's outputs cannot be written."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{jax.process_index()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise PermissionError(f"cannot write to --workdir {workdir}: {e.strerror}. Choose a "
                          "folder you can write to.") from None


def _me() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:500]}


def _describe(holder: dict) -> str:
  return (f"process {holder.get('pid')} on {holder.get('host')}, started "
          f"{holder.get('started')} ({holder.get('command')})")


def _take(workdir: str) -> None:
  """Takes ``workdir`` for this process, or raises `WorkdirInUse`."""
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    with os.fdopen(os.dup(fd), "r") as f:
      text = f.read()
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = json.loads(text) if text.strip() else {}
      raise WorkdirInUse(
          f"--workdir {workdir} is in use by another run: {_describe(holder)}. Wait for it "
          "to finish, or give this run another --workdir.") from None
    holder = json.loads(text) if text.strip() else {}
    if holder and holder.get("host") != socket.gethostname():
      raise WorkdirInUse(
          f"--workdir {workdir} is held by a run on another host: {_describe(holder)}. This "
          f"host cannot see whether it still runs; if it does not (a lost node), delete "
          f"{path} and start again.")
    if holder and holder.get("pid") != os.getpid():
      logging.warning("Taking over %s from %s, which is gone (a run that was killed); "
                      "resuming its checkpoints.", path, _describe(holder))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me()).encode(), 0)
    os.fsync(fd)
  except BaseException:
    os.close(fd)
    raise
  _held[os.path.abspath(workdir)] = fd


def hold(workdir: str) -> None:
  """Holds ``workdir`` for this run (a no-op if this process holds it already).

  Raises:
    WorkdirInUse: another run holds it (or, in a multi-process run, process 0 could not
      take it).
  """
  if os.path.abspath(workdir) in _held:
    return
  error = None
  if jax.process_index() == 0:
    try:
      _take(workdir)
    except WorkdirInUse as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if error is None and int(failed):
      raise WorkdirInUse(f"process 0 could not take --workdir {workdir}: another run "
                         "holds it (see process 0's error).")
  if error is not None:
    raise error
  _held.setdefault(os.path.abspath(workdir), -1)  # -1: held by process 0 for this one


def release(workdir: str) -> None:
  """Gives ``workdir`` back: the lock file is emptied (no holder) and the flock dropped.

  The file stays: removing it would let a run that opened it just before hold a deleted
  file while another creates a new one.
  """
  fd = _held.pop(os.path.abspath(workdir), None)
  if fd is not None and fd >= 0:
    os.ftruncate(fd, 0)
    os.close(fd)
