"""profile_step's summary of a trace: per device, per op and per kind of op, per step."""

import gzip
import json

from benchmarks import profile_step


def write_trace(path, events):
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": events}, f)


def test_kind_of_drops_numeric_suffixes():
  assert profile_step.kind_of("fusion.12") == "fusion"
  assert profile_step.kind_of("input_reduce_fusion_523") == "input_reduce_fusion"
  assert profile_step.kind_of("conv_general_dilated.1.2") == "conv_general_dilated"
  assert profile_step.kind_of("sm90_xmma_fprop") == "sm90_xmma_fprop"


def test_summary_counts_device_events_per_step(tmp_path):
  gpu, host = 1, 2
  events = [
      {"ph": "M", "name": "process_name", "pid": gpu, "args": {"name": "/device:GPU:0"}},
      {"ph": "M", "name": "process_name", "pid": host, "args": {"name": "/host:CPU"}},
      # Two steps: a slow conv kernel twice a step, two reduce fusions once a step each.
      *[{"ph": "X", "pid": gpu, "name": "slow_conv", "ts": t, "dur": 4000} for t in range(4)],
      {"ph": "X", "pid": gpu, "name": "input_reduce_fusion_1", "ts": 9, "dur": 500},
      {"ph": "X", "pid": gpu, "name": "input_reduce_fusion_2", "ts": 9, "dur": 300},
      {"ph": "X", "pid": gpu, "name": "input_reduce_fusion_1", "ts": 9, "dur": 500},
      {"ph": "X", "pid": gpu, "name": "input_reduce_fusion_2", "ts": 9, "dur": 300},
      # Python on the host is not device time, unless it is an XLA op (CPU backends).
      {"ph": "X", "pid": host, "name": "PjitFunction(step)", "ts": 0, "dur": 99999},
      {"ph": "X", "pid": host, "name": "fusion.3", "ts": 0, "dur": 1000,
       "args": {"hlo_op": "fusion.3"}},
  ]
  path = tmp_path / "perfetto_trace.json.gz"
  write_trace(path, events)
  lines = profile_step.summarise(str(path), steps=2, top=5)
  gpu_at = lines.index("== /device:GPU:0: 8.80 ms of events per step")
  assert lines[gpu_at + 1].split() == ["8.000", "ms", "x2", "slow_conv"]
  assert "-- by kind" in lines
  kinds = lines[lines.index("-- by kind", gpu_at) + 1:][:2]
  assert [k.split() for k in kinds] == [["8.000", "ms", "x2", "slow_conv"],
                                        ["0.800", "ms", "x2", "input_reduce_fusion"]]
  assert "== /host:CPU: 0.50 ms of events per step" in lines
  assert not any("PjitFunction" in line for line in lines)
