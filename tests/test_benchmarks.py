"""`benchmarks.suite`: every benchmark in its own process, one report; and the parts of
single benchmarks that a small run can check.

Small sizes of one benchmark (NumPy is its peer, so the test needs no extra);
the real sizes are the command's, and its reports are in reports/.
"""

import collections
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--flags=evaluation:--num_items=2000", "--flags=evaluation:--num_queries=32",
         "--flags=evaluation:--numpy_queries=8"]


def _suite(*args):
  return subprocess.run([sys.executable, "-m", "benchmarks.suite", *args], cwd=ROOT,
                        capture_output=True, text=True, check=False)


def test_suite_gathers_each_benchmark_report_under_one_header(tmp_path):
  output = tmp_path / "benchmark_cpu.md"
  done = _suite("--benchmarks=evaluation", *SMALL, f"--output={output}")
  assert done.returncode == 0, done.stderr[-3000:]
  report = output.read_text()
  own = (tmp_path / "benchmark_cpu" / "benchmark_evaluation.md").read_text()
  assert report.startswith("# Benchmark suite\n")
  assert "backend cpu" in report and "| evaluation | --num_items=2000" in report
  # The benchmark's own report, headings one level down, inside the suite's.
  assert "## Retrieval evaluation at scale" in report and own.startswith("# Retrieval")
  assert "N = 2,000 items (64-d embeddings, 10 classes), 32 queries evaluated" in report
  assert "| scores + values-only sort |" in report
  assert own.rstrip().splitlines()[-1].startswith("Peak memory: ")
  assert "--flags=evaluation:--num_queries=32" in report  # The regenerate command.
  # --resume keeps the report already written (the bad flag is never used).
  done = _suite("--benchmarks=evaluation", "--flags=evaluation:--num_items=notanumber",
                "--resume", f"--output={output}")
  assert done.returncode == 0, done.stderr[-3000:]
  assert "| evaluation | --num_items=notanumber | earlier run |" in output.read_text()
  assert "N = 2,000 items" in output.read_text()


def test_suite_stops_on_a_failing_benchmark_and_writes_no_report(tmp_path):
  output = tmp_path / "benchmark_cpu.md"
  done = _suite("--benchmarks=evaluation", "--flags=evaluation:--num_items=notanumber",
                f"--output={output}")
  assert done.returncode != 0
  assert "benchmarks.evaluation failed" in done.stderr
  assert not output.exists()


def test_suite_refuses_flags_for_a_benchmark_it_does_not_run(tmp_path):
  done = _suite("--benchmarks=evaluation", "--flags=hamming:--database=10",
                f"--output={tmp_path / 'b.md'}")
  assert done.returncode != 0 and "'hamming' is not among --benchmarks" in done.stderr


def test_hashing_codes_reports_the_bits_that_differ_from_float64(tmp_path):
  output = tmp_path / "codes.md"
  done = subprocess.run([sys.executable, "-m", "benchmarks.hashing_codes", "--dataset=synthetic",
                         "--bits=16", "--methods=cvh,lssh", f"--output={output}"], cwd=ROOT,
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  report = output.read_text()
  assert "| cvh | 16 | 0 |" in report and "| lssh | 16 | 0 |" in report
  assert "Differing bits in all: 0." in report


def test_rss_attribution_places_each_allocation_by_its_native_stack():
  from benchmarks import rss_attribution  # pylint: disable=import-outside-toplevel
  # Innermost first, abridged from a capture of `benchmarks.rss_attribution`.
  convolution = ["Eigen::internal::TensorContractionBlockMemAllocator<float, float>::allocate",
                 "xla::cpu::ConvolutionThunk::Execute(xla::cpu::Thunk::ExecuteParams const&)",
                 "xla::cpu::ThunkExecutor::Execute(xla::cpu::Thunk::ExecuteParams const&)",
                 "xla::CpuPjRtRawLoadedExecutable::Execute(xla::ExecuteOptions const&)"]
  device_put = ["tsl::port::AlignedMalloc(unsigned long, std::align_val_t)",
                "xla::CpuDeviceMemory::Allocate(unsigned long)",
                "jax::DevicePutWithSharding(absl::Span<nanobind::handle const>)"]
  lowering = ["llvm::allocate_buffer(unsigned long, unsigned long)",
              "mlir::detail::StorageUniquerImpl::getOrCreate(mlir::TypeID)", "PyObject_Vectorcall"]
  numpy = ["PyDataMem_UserNEW", "PyArray_NewFromDescr_int", "_PyEval_EvalFrame"]
  assert [rss_attribution.region(frames) for frames in (convolution, device_put, lowering, numpy)
          ] == ["simulated devices", "simulated devices", "programs", "host"]

  # Live at sample 5: allocated before it, and freed after it or never.
  Interval = collections.namedtuple(
      "Interval", "allocated_before_snapshot deallocated_before_snapshot n_allocations n_bytes")
  Record = collections.namedtuple("Record", "intervals frames")
  Record.native_stack_trace = lambda record: [(frame, "file", 0) for frame in record.frames]
  records = [Record([Interval(2, 9, 1, 100), Interval(5, None, 2, 30), Interval(6, None, 1, 7)],
                    convolution),
             Record([Interval(1, 5, 1, 1000), Interval(4, 6, 1, 10)], numpy),
             Record([Interval(7, None, 1, 5000)], lowering)]
  assert rss_attribution.live_by_region(records, 5) == {
      "host": 10, "programs": 0, "simulated devices": 130}
