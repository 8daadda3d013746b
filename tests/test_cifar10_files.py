"""CIFAR-10 from its official Python batches: the tarball as downloaded, or the folder it
unpacks to, read without TensorFlow and through an unpickler that runs no code."""

import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import override
from experiments.configs import darknet as darknet_configs
from jaxgan.data import classification

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch(n, seed):
  """One batch as the 2009 files hold it: protocol 2, bytes keys, a uint8 numpy array of
  rows (3 colour planes of 32x32, row-major), labels as a list."""
  rng = np.random.default_rng(seed)
  return pickle.dumps({b"batch_label": b"training batch", b"labels": rng.integers(
      0, 10, n).tolist(), b"data": rng.integers(0, 256, (n, 3072), np.uint8),
                       b"filenames": [b"x.png"] * n}, protocol=2)


def write_official(root, n=8):
  """``cifar-10-batches-py/`` and ``cifar-10-python.tar.gz`` under ``root``, tiny."""
  folder = root / "cifar-10-batches-py"
  folder.mkdir(parents=True)
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  for i, name in enumerate(names):
    (folder / name).write_bytes(batch(n, i))
  (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"cat"]}, protocol=2))
  tarball = root / "cifar-10-python.tar.gz"
  with tarfile.open(tarball, "w:gz") as archive:
    archive.add(folder, arcname="cifar-10-batches-py")
  return folder, tarball


def test_the_tarball_and_the_folder_give_the_same_images_in_nhwc(tmp_path):
  folder, tarball = write_official(tmp_path)
  train = classification.load_cifar10_files(str(tarball), "train")
  assert train.images.shape == (40, 32, 32, 3) and train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32 and len(train.labels) == 40
  raw = pickle.loads(batch(8, 0))[b"data"]  # row 0 of data_batch_1: R plane, G, B
  np.testing.assert_array_equal(train.images[0, :, :, 1], raw[0, 1024:2048].reshape(32, 32))
  again = classification.load_cifar10_files(str(folder), "train")
  np.testing.assert_array_equal(again.images, train.images)
  test = classification.load_cifar10_files(str(folder), "test")
  assert len(test) == 8 and test.mean == classification.FACTS["cifar10"].mean
  for points_at in (tarball, folder, tmp_path):  # the file, the folder, or their parent
    assert classification.find_cifar10_files(str(points_at)) is not None


def test_a_pickle_that_names_other_code_is_refused(tmp_path):
  folder, _ = write_official(tmp_path)

  class Hostile:
    def __reduce__(self):
      return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

  (folder / "test_batch").write_bytes(pickle.dumps({b"data": Hostile()}, protocol=2))
  with pytest.raises(ValueError, match=r"test_batch is not a CIFAR-10 Python batch "
                                       r"\(UnpicklingError: refusing posix.system"):
    classification.load_cifar10_files(str(folder), "test")
  assert not (tmp_path / "pwned").exists()


def test_damaged_files_are_one_clear_error_naming_the_file(tmp_path):
  folder, tarball = write_official(tmp_path)
  truncated = tmp_path / "cut.tar.gz"
  truncated.write_bytes(tarball.read_bytes()[:len(tarball.read_bytes()) // 2])
  with pytest.raises(ValueError, match=rf"{truncated} is not a readable tar.gz .*download"):
    classification.load_cifar10_files(str(truncated), "train")
  (folder / "data_batch_3").write_bytes(batch(8, 3)[:100])
  with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR-10 Python batch"):
    classification.load_cifar10_files(str(folder), "train")
  os.remove(folder / "data_batch_3")
  with pytest.raises(FileNotFoundError, match=r"data_batch_3 is missing"):
    classification.load_cifar10_files(str(folder), "train")


CIFAR10_FROM_THE_TARBALL = """
import sys
sys.modules["tensorflow"] = None  # as if TensorFlow were not installed: importing it fails
from absl import flags
flags.FLAGS(sys.argv[:1])
from conftest import override
from experiments.configs import darknet as darknet_configs
from jaxgan.train import darknet
config = override(darknet_configs.get_config("cifar10"), batch_size=8, eval_batch_size=8,
                  num_epochs=1, precision="fp32", **{
                      "data.data_dir": sys.argv[1], "model.num_blocks": (1, 1),
                      "model.nf": 4})
record = darknet.train_and_evaluate(config, sys.argv[2])
assert record["step"] == 40 // 8, record
print("CIFAR10-OK", record["test_accuracy"])
"""


@pytest.mark.parametrize("form", ["tarball", "folder"])
def test_the_cifar10_variant_trains_from_its_files_without_tensorflow(form, tmp_path):
  folder, tarball = write_official(tmp_path)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "tests")]))
  data_dir = tarball if form == "tarball" else folder
  result = subprocess.run([sys.executable, "-c", CIFAR10_FROM_THE_TARBALL, str(data_dir),
                           str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "CIFAR10-OK" in result.stdout


def test_without_its_files_cifar10_still_names_both_ways_to_get_it(tmp_path):
  config = override(darknet_configs.get_config("cifar10"),
                    **{"data.data_dir": str(tmp_path)})
  with pytest.raises(FileNotFoundError, match=r"tfds build cifar10.*cifar-10-python.tar.gz"):
    classification.load_split(config.data, "test")
