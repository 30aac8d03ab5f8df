"""The README's GPU measurements as one run, on a GPU host that may have no network.

Runs, in order of importance and each under its own time limit inside one overall budget:
the inference benchmark of the paper's model (R-50, 360x640, 180 frames, about 10 kept
queries per window) in bfloat16 and then float32, the host post-processing benchmark with
the run boundaries found on the device, the test files whose code takes a different path on
a GPU (two steps: fused attention and the predictor, then backend kernels and device RLE),
the post-processing benchmark with the run boundaries found on the host, and the train-step
benchmark in both precisions. Each step writes its JSON or log under the output folder as
soon as it ends, so a run cut short keeps what it measured; `summary.txt` gathers the
figures the README's "GPU speed" section asks for.

The host needs JAX with CUDA, flax, optax, orbax-checkpoint, numpy and scipy. Packages it
lacks (ml_collections, absl-py, PyYAML, pycocotools, pillow; pytest and its dependencies for the
tests) can come as wheels in a folder (`--wheels`, default .whl/): each one whose module does
not import already is unpacked into a private folder put on the subprocesses' PYTHONPATH
(wheels are zip files: no pip or network needed). Fetch them on a machine with network:

  pip download --no-deps --only-binary=:all: --python-version 3.12 \\
      --platform manylinux2014_x86_64 -d .whl ml_collections absl-py PyYAML pycocotools \\
      pillow pytest pluggy iniconfig packaging pygments

  python tools/gpu_run.py --out gpu-results --budget 540
  python tools/gpu_run.py --out gpu-more --only inference_float32 train   # the rest, later
  python tools/gpu_run.py --smoke --out /tmp/smoke   # the plumbing, on any machine: tiny model

`--smoke` runs every step with the tiny model at small sizes, one trial each, to check the
script itself (and a host's packages) in a minute or two; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (wheel name prefix, any case; the module it provides): unpacked only when the module is
# missing.
WHEEL_MODULES = (("ml_collections", "ml_collections"), ("absl_py", "absl"), ("PyYAML", "yaml"),
                 ("pycocotools", "pycocotools"), ("pytest", "pytest"),
                 ("pluggy", "pluggy"), ("iniconfig", "iniconfig"), ("packaging", "packaging"),
                 ("pygments", "pygments"), ("pillow", "PIL"))

# Test files whose code differs on a GPU, in two steps that `--only` can pick apart (one
# lease ran out of time inside them): the predictor with attention that may take cuDNN's
# fused kernel, then kernels=auto's XLA convolutions and the masks' run boundaries found on
# the device.
GPU_TESTS = {
    "tests_predictor": ("tests/test_fused_attention.py", "tests/test_inference.py"),
    "tests_kernels": ("tests/test_kernels.py", "tests/test_device_rle.py"),
}


def steps(smoke: bool) -> list[tuple[str, int, list[str]]]:
    """(name, time limit in seconds, command) of each step, in the order they run."""
    main = [sys.executable, str(REPO / "main.py"), "benchmark"]
    if smoke:
        inference = ["--what", "inference", "--config", "tiny", "--height", "64", "--width",
                     "96", "--frames", "8", "--repeats", "1", "--trials", "1", "--json"]
        postprocess = ["--what", "postprocess", "--height", "180", "--width", "320",
                       "--frames", "8", "--repeats", "1", "--json"]
        train = ["--what", "train", "--config", "tiny", "--batches", "2", "--warmup", "1",
                 "--json"]
    else:
        inference = ["--what", "inference", "--config", "ifc_r50_ytvis19", "--height", "360",
                     "--width", "640", "--frames", "180", "--kept-queries", "10", "--json"]
        postprocess = ["--what", "postprocess", "--json"]
        train = ["--what", "train", "--config", "ifc_r50_ytvis19", "--json"]
    limit = 300
    # Without the project's addopts: they ask for pytest-xdist's workers.
    pytest = [sys.executable, "-m", "pytest", "-q", "--maxfail=10", "-p", "no:cacheprovider",
              "-o", "addopts="]
    tests = [(name, limit, pytest + [str(REPO / path) for path in paths])
             for name, paths in GPU_TESTS.items()]
    return [
        # The figure that matters most gets the most time (first compiles of the model).
        ("inference_bfloat16", limit + 60, main + inference + ["--dtypes", "bfloat16"]),
        ("inference_float32", limit, main + inference + ["--dtypes", "float32"]),
        ("postprocess_device", limit // 2,
         main + postprocess + ["--config.inference.mask_rle=device"]),
        # Whether the GPU paths compute the right thing before the remaining speeds.
        *tests,
        ("postprocess_host", limit // 2, main + postprocess + ["--config.inference.mask_rle=host"]),
        ("train", limit, main + train + ["--dtypes", "bfloat16", "float32"]),
    ]


def unpack_missing_wheels(wheels: Path, site: Path) -> list[str]:
    """Unpacks into `site` each wheel in `wheels` whose module this Python cannot import;
    returns the wheels unpacked."""
    import importlib.util

    unpacked = []
    for wheel in sorted(wheels.glob("*.whl")) if wheels.is_dir() else []:
        module = next((module for prefix, module in WHEEL_MODULES
                       if wheel.name.lower().startswith(prefix.lower() + "-")), None)
        if module is None or importlib.util.find_spec(module) is not None:
            continue
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
        unpacked.append(wheel.name)
    return unpacked


def environment_lines(env: dict[str, str]) -> list[str]:
    """The host's accelerator and package versions, as this run saw them."""
    probe = ("import jax, jaxlib, flax, numpy; "
             "print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', "
             "flax.__version__, 'numpy', numpy.__version__); "
             "print('devices', jax.devices()); "
             "print('kind', jax.devices()[0].device_kind)")
    lines = []
    for command in ([sys.executable, "-c", probe], ["nvidia-smi", "-L"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                  env=env, check=False)
            lines += (done.stdout + done.stderr).strip().splitlines()[-6:]
        except (OSError, subprocess.TimeoutExpired) as err:
            lines.append(f"{command[0]}: {err}")
    return lines


def summarize(name: str, text: str) -> list[str]:
    """The figures of a step's JSON output (its stdout), one line each."""
    try:
        result = json.loads(text)
    except ValueError:
        return [f"{name}: no JSON output"]
    lines = []
    if result.get("what") == "inference":
        for run in result["runs"]:
            for setting, s in run["settings"].items():
                roof = s["roofline"]["model_only"]
                lines.append(
                    f"{name}: {setting} T={s['window_frames']} {run['dtype']}: "
                    f"{s['frames_per_s']:.0f} frames/s end to end, "
                    f"{s['model_only']['frames_per_s']:.0f} model-only, ratio "
                    f"{s['end_to_end_over_model_only']:.2f}, "
                    f"{100 * roof['fraction_of_peak']:.1f} % of the measured peak "
                    f"({roof['tflop_per_s']:.3g} TFLOP/s); stages ms/frame "
                    + ", ".join(f"{k} {v:.3f}" for k, v in s["stage_ms_per_frame"].items())
                    # The host's CPU work per frame: what its threads must keep up with.
                    + f"; host CPU {s['host_cpu_ms_per_frame']:.3f} ms/frame, cores busy "
                    f"{s['cores_busy']['end_to_end']:.2f} / {s['cores_busy']['model_only']:.2f}"
                    # Where the stream's main thread spent its time (a dispatch that blocks
                    # serialises host and device work).
                    + "; host seconds " + ", ".join(f"{k} {v:.3f}"
                                                    for k, v in s["host_seconds"].items())
                    # A run that keeps no query times no tracking or RLE: say so.
                    + f"; {s['tracks']} tracks, {s['results']} results")
    elif result.get("what") == "train":
        for run in result["runs"]:
            lines.append(
                f"{name}: {run['dtype']}: {run['clips_per_s']:.2f} clips/s "
                f"({result['batch_size']} clips x {result['num_frames']} frames at "
                f"{result['height']}x{result['width']}), "
                f"{100 * run['roofline']['fraction_of_peak']:.1f} % of the measured peak "
                f"({run['roofline']['tflop_per_s']:.3g} of {run['peak']['tflop_per_s']:.3g} "
                f"TFLOP/s), compiled in {run['compile_seconds']:.0f} s")
    elif result.get("what") == "postprocess":
        lines.append(f"{name}: {result['mask_rle']} on {result['backend']}, "
                     f"{result['height']}x{result['width']}, {result['tracks']} tracks: "
                     + ", ".join(f"{run['threads']} thread(s) {run['ms_per_frame']:.2f} ms "
                                 f"per frame (tracking {run['tracking_ms_per_frame']:.2f}, "
                                 f"masks+RLE {run['masks_rle_ms_per_frame']:.2f} thread ms; "
                                 f"same masks: {run['same_masks_as_full_size']})"
                                 for run in result["runs"])
                     + f"; full-size path {result['full_size_path']['ms_per_frame']:.1f} ms")
    else:
        lines.append(f"{name}: unexpected output {str(result)[:200]}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-results", help="output folder (created)")
    parser.add_argument("--wheels", default=str(REPO / ".whl"),
                        help="folder of wheels for the packages the host lacks")
    parser.add_argument("--budget", type=int, default=540,
                        help="seconds for all steps together (default 540)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny model and sizes: checks the script, not the speed")
    parser.add_argument("--only", nargs="+", default=None, help="run only these steps")
    args = parser.parse_args(argv)
    names = [name for name, _, _ in steps(args.smoke)]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"--only: unknown step(s) {', '.join(unknown)}; the steps: "
                     f"{', '.join(names)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    site = Path(tempfile.mkdtemp(prefix="ifc-jax-wheels-"))
    unpacked = unpack_missing_wheels(Path(args.wheels), site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(site), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # One compilation cache for all steps: the programs they share compile once.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(site / "xla-cache"))
    if not args.smoke:
        env.setdefault("JAX_PLATFORMS", "cuda")  # the tests' conftest defaults to cpu
    summary = [f"unpacked wheels: {', '.join(unpacked) or 'none'}", *environment_lines(env)]
    print("\n".join(summary), flush=True)
    for name, limit, command in steps(args.smoke):
        if args.only and name not in args.only:
            continue
        left = args.budget - (time.monotonic() - begin)
        if left < 20:
            summary.append(f"{name}: skipped, {left:.0f} s of the budget left")
            print(summary[-1], flush=True)
            continue
        limit = int(min(limit, left))
        print(f"== {name} (at most {limit} s)", flush=True)
        started = time.monotonic()
        suffix = "txt" if name in GPU_TESTS else "json"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=limit,
                                  env=env, cwd=REPO, check=False)
            stdout, stderr, status = done.stdout, done.stderr, str(done.returncode)
        except subprocess.TimeoutExpired as err:
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else err.stdout or ""
            stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else err.stderr or ""
            status = f"timed out after {limit} s"
        (out / f"{name}.{suffix}").write_text(stdout)
        (out / f"{name}.log").write_text(stderr)
        seconds = time.monotonic() - started
        lines = [f"{name}: exit {status}, {seconds:.0f} s"]
        if name in GPU_TESTS:
            lines += [f"{name}: {line}" for line in stdout.strip().splitlines()[-3:]]
        elif status == "0":
            lines += summarize(name, stdout)
        else:
            lines += [f"{name}: {line}" for line in stderr.strip().splitlines()[-5:]]
        summary += lines
        print("\n".join(lines), flush=True)
        (out / "summary.txt").write_text("\n".join(summary) + "\n")
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
