"""One-time conversion of pytorch-fid's Inception weights to the ``.npz`` jaxgan reads.

On a machine with internet and torch (any CPU build)::

  wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
  python -m jaxgan.evaluation.convert_inception \\
      --input pt_inception-2015-12-05-6726825d.pth --output fid_inception.npz

The output holds one float32 array per state-dict tensor, named by its key, in
PyTorch's layout (`jaxgan.evaluation.inception.load_inception_params` does the
transposes). Only this command needs torch; it is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Mapping

import numpy as np

from jaxgan.evaluation import inception


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """State dict of numpy-convertible arrays → the arrays the ``.npz`` holds.

  Drops BatchNorm's ``num_batches_tracked`` counters (bookkeeping, no weights),
  casts to float32 and checks the result against the network's layout, so a
  wrong file fails here rather than at evaluation time.

  Raises:
    ValueError: missing, unused or wrongly shaped tensors, all named.
  """
  arrays = {key: np.asarray(value, np.float32) for key, value in state_dict.items()
            if not key.endswith(".num_batches_tracked")}
  inception.variables_from_state_dict(arrays)
  return arrays


def save_npz(arrays: Mapping[str, np.ndarray], output: str | os.PathLike) -> str:
  """Writes ``arrays`` uncompressed (weights barely compress; loading stays fast)."""
  output = os.fspath(output)
  parent = os.path.dirname(output)
  if parent:
    os.makedirs(parent, exist_ok=True)
  with open(output, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
    np.savez(f, **arrays)
  return output


def _load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # Optional: only this conversion needs it.
  except ImportError as e:
    raise SystemExit(
        "Converting the .pth needs torch, which jaxgan does not require: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu") from e
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  return {key: value.detach().cpu().numpy() for key, value in state_dict.items()}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--input", required=True, help=f"pytorch-fid's {inception.WEIGHTS_FILE}")
  parser.add_argument("--output", required=True, help="the .npz to write")
  args = parser.parse_args(argv)
  arrays = convert_state_dict(_load_torch_state_dict(args.input))
  save_npz(arrays, args.output)
  total = sum(a.size for a in arrays.values())
  print(f"Wrote {len(arrays)} arrays ({total:,} values) to {args.output}.")


if __name__ == "__main__":
  main()
