"""`train(config, workdir)`: the sharded, resumable, preemption-safe training loop.

One `Mesh` over all devices of all processes with a `data` axis; the state is replicated and
every batch is split over `data`. Each process reads its own slice of the global batch
(`config.train.batch_size / process_count` clips) and `make_global_batch` assembles the global
array. Multi-host is opt-in through `config.distributed` (see `setup_distributed`).

Resuming: checkpoints go to WORKDIR/checkpoints every `checkpoint_every` steps; a restart with
the same workdir continues from the latest one, with the data order continuing where it left
off (the pipeline is a pure function of (seed, batch number)) and per-step dropout rngs from
`fold_in(seed, step)`, so the losses after a restart equal those of an uninterrupted run.
SIGTERM (TPU/SLURM preemption) saves a checkpoint at the next step boundary and exits cleanly.

Evaluation during training (`config.train.eval_every_steps`): the loop knows nothing of
inference or metrics (they sit above it); it calls the `evaluate_fn` it is given at those
step boundaries and writes what comes back to TensorBoard and the log (`EvaluateFn`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifc_jax import storage
from ifc_jax.checkpoints import Checkpoints, load_variables, merge_params, write_config_json
from ifc_jax.io import UserError, first_line
from ifc_jax.models.ifc import IFC
from ifc_jax.train.losses import PAPER_LOSS_WEIGHTS, LossWeights
from ifc_jax.train.optim import build_optimizer
from ifc_jax.train.step import BATCH_AXIS, init_state, make_train_step, select_model_inputs
from ifc_jax.train.workdir import check_resumable, prepare_workdir, workdir_lock

log = logging.getLogger("ifc_jax.train")


class TrainingDivergedError(UserError):
    """The loss became NaN or infinite."""


EvaluateFn = Callable[[int, dict[str, Any]], dict[str, float]]
"""`evaluate_fn(step, variables) -> scalars`, called by every process after the same steps
(every `config.train.eval_every_steps`) with this process's copy of the trained variables
({'params', 'batch_stats'}, numpy). Returns what to report: name -> value, written to
TensorBoard as eval/NAME and logged in one line (a "videos" entry is the number of videos
evaluated); process 0 reports, the others may return {}. `ifc_jax.api.train` builds it."""

EVAL_LOG_KEYS = ("AP", "AP50", "AP75", "AR1", "AR10")  # of the scalars, those in the log line


def setup_distributed(distributed: Any) -> None:
    """Joins a multi-process JAX runtime when asked to ('auto' or 'explicit')."""
    mode = distributed.mode
    if mode == "off":
        return
    try:
        if mode == "auto":  # TPU pods, SLURM, ... : jax discovers the cluster
            jax.distributed.initialize()
        else:  # explicit
            jax.distributed.initialize(
                coordinator_address=distributed.coordinator_address,
                num_processes=distributed.num_processes,
                process_id=distributed.process_id,
            )
    except (ValueError, RuntimeError) as err:
        # e.g. 'auto' outside a TPU pod / SLURM job: jax finds no coordinator to join.
        raise UserError(f"config.distributed.mode={mode}: cannot join the multi-process "
                        f"runtime ({first_line(err)}); outside a TPU pod or SLURM job use 'off' "
                        "or 'explicit'") from err


def _check_training_extras() -> None:
    """UserError unless the input pipeline's and TensorBoard's packages are installed (the
    `[data]` extra: inference, conversion and FLOPs run without them)."""
    import importlib.util

    missing = [name for name in ("tensorflow", "tensorflow_datasets", "clu", "tensorboard")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"training needs {', '.join(missing)} (the input pipeline and "
                        "TensorBoard): pip install 'ifc-jax[data]'")


def check_batch_split(batch: int, device_count: int, process_count: int) -> None:
    """UserError unless `batch` clips split evenly over the devices and the processes."""
    for count, what in ((device_count, "devices"), (process_count, "processes")):
        if batch % count:
            raise UserError(f"config.train.batch_size: {batch} clips cannot be split evenly "
                            f"over {count} {what}")


def check_can_train(config: Any, device_count: int, process_count: int) -> None:
    """What the validated config cannot know alone: that the batch splits over the devices
    and processes that run it, and that the files it names exist. UserError otherwise."""
    from ifc_jax.data import sources

    check_batch_split(config.train.batch_size, device_count, process_count)
    data = config.data
    # The toy datasets are generated and a TFDS build exported on first use.
    if not sources.prepared_on_first_use(data):
        json_path = storage.join(data.root, data.train_json)
        if not storage.isfile(json_path):
            raise UserError(f"config.data.root: training annotations {json_path} not found "
                            "(see data/README.md)")
    if config.train.init_from and not storage.exists(config.train.init_from):
        raise UserError(f"config.train.init_from: {config.train.init_from} does not exist")


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (BATCH_AXIS,))


def _load_train_split(config: Any) -> Any:
    """The train split, its categories checked against the model (the toy datasets are
    generated and a TFDS build exported on first use: process 0 writes them, the others
    wait)."""
    from ifc_jax.data import sources

    generated = sources.prepared_on_first_use(config.data)  # process 0 writes, others wait
    generated_here = generated and jax.process_index() == 0
    if generated_here:
        dataset = sources.load_split(config.data, "train")
    if generated:
        _sync("training split ready")
    if not generated_here:
        dataset = sources.load_split(config.data, "train")
    if dataset.categories.num_classes != config.model.num_classes:
        raise UserError(f"{dataset.json_path}: {dataset.categories.num_classes} categories but "
                        f"config.model.num_classes={config.model.num_classes}")
    return dataset


class _PreemptionFlag:
    """Set by SIGTERM (preemption) or a first Ctrl-C; the loop saves and stops at the next step
    boundary. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            log.warning("Ctrl-C: saving a checkpoint after this step (Ctrl-C again to abort)")

    def __enter__(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            # Outside the main thread (e.g. a notebook worker) no handler can be installed.
            with contextlib.suppress(ValueError):
                self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _log_line(step: int, num_steps: int, metrics: dict[str, float], clips_per_s: float,
              eta_s: float) -> str:
    terms = " ".join(f"{name[5:]} {value:.3f}" for name, value in metrics.items()
                     if name.startswith("loss_") and name.count("_") == 1)
    return (f"step {step}/{num_steps} | loss {metrics['loss']:.4f} ({terms}) | "
            f"lr {metrics['lr']:.2e} | grad {metrics['grad_norm']:.3f} | "
            f"{clips_per_s:.2f} clips/s | ETA {_format_duration(eta_s)}")


def initial_state(config: Any, model: IFC, optimizer, mesh: Mesh) -> dict[str, Any]:
    """A fresh train state (random init of `config.train.seed`), replicated over `mesh`."""
    replicated = NamedSharding(mesh, PartitionSpec())
    frames = jax.ShapeDtypeStruct((1, config.data.num_frames, 64, 64, 3), np.uint8)
    padding = jax.ShapeDtypeStruct(frames.shape[:-1], np.bool_)
    init_fn = jax.jit(
        lambda rng: init_state(model, optimizer, rng, np.zeros(frames.shape, frames.dtype),
                               np.zeros(padding.shape, padding.dtype)),
        out_shardings=replicated,
    )
    return init_fn(jax.random.key(config.train.seed))


def build_train_step(config: Any, model: IFC, optimizer, schedule, mesh: Mesh,
                     matcher: str | None = None):
    """The jitted train step of `config` (dropout rng from train.seed; matcher defaults to
    config.train.matcher; loss weights from loss_weights(config); train.loss_group_size), as
    the loop runs it."""
    base_rng = jax.random.fold_in(jax.random.key(config.train.seed), 1)
    return make_train_step(model, optimizer, schedule, base_rng, mesh,
                           matcher or config.train.matcher, loss_weights(config),
                           int(config.train.loss_group_size))


def loss_weights(config: Any) -> LossWeights:
    """The set criterion's weights: the paper's, with `train.no_object_weight` (default 0.1)."""
    return PAPER_LOSS_WEIGHTS._replace(no_object=float(config.train.no_object_weight))


def train(config: Any, workdir: str, evaluate_fn: EvaluateFn | None = None
          ) -> list[dict[str, float]]:
    """Trains `config` in `workdir`; returns the logged metrics (one dict per log step).

    Before anything expensive: the workdir must be writable and not in use by another train
    (WORKDIR/train.lock), and its checkpoints must fit the config's shapes; the config is
    then recorded as WORKDIR/config.json. `evaluate_fn` runs every
    `config.train.eval_every_steps` steps (`EvaluateFn`).
    """
    _check_training_extras()
    setup_distributed(config.distributed)
    check_can_train(config, jax.device_count(), jax.process_count())
    leader = jax.process_index() == 0
    if leader:
        prepare_workdir(workdir)
    _sync("workdir ready")
    with workdir_lock(workdir, take=leader):
        check_resumable(workdir, config, has_checkpoints=_has_checkpoints(workdir))
        _sync("config compared")
        if leader:  # what `load`, `evaluate` and `predict` default to
            write_config_json(workdir, config)
        return _train(config, workdir, evaluate_fn)


def _sync(name: str) -> None:
    """A barrier of all processes of a multi-process job (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _any_process(flag: bool) -> bool:
    """Whether `flag` is set in any process. A signal may reach only some hosts of a job
    (one preempted VM, one Ctrl-C): every process must stop after the same step, or the
    others would wait forever in the next step's collectives."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def _has_checkpoints(workdir: str) -> bool:
    folder = storage.join(workdir, "checkpoints")
    return storage.isdir(folder) and any(name.isdigit() for name in storage.listdir(folder))


def _train(config: Any, workdir: str, evaluate_fn: EvaluateFn | None = None
           ) -> list[dict[str, float]]:
    # TensorFlow (data, TensorBoard writer) is imported only once the run is known good.
    from clu import metric_writers

    from ifc_jax.data.global_batch import make_global_batch
    from ifc_jax.data.pipeline import train_batches

    dataset = _load_train_split(config)
    mesh = make_mesh()
    devices = jax.devices()
    log.info("%d %s device(s) (%s) in %d process(es); mesh %s; %d clips per step, %d per "
             "device", len(devices), devices[0].platform, devices[0].device_kind,
             jax.process_count(), dict(mesh.shape), config.train.batch_size,
             config.train.batch_size // len(devices))
    model = IFC.from_config(config.model)
    train_cfg = config.train
    num_steps = int(train_cfg.num_steps)

    optimizer, schedule = build_optimizer(train_cfg, config.model.backbone.freeze_at)
    state = initial_state(config, model, optimizer, mesh)

    checkpoints = Checkpoints(workdir, int(train_cfg.checkpoint_every),
                              int(train_cfg.keep_checkpoints))
    restored = checkpoints.restore_latest_intact(state)
    if restored is not None:
        state, start_step = restored
        log.info("resumed from %s at step %d", checkpoints.directory, start_step)
    else:
        start_step = 0
        if train_cfg.init_from:
            source = load_variables(train_cfg.init_from)
            merged, taken, kept = merge_params(state["params"], source["params"],
                                               tuple(train_cfg.init_exclude))
            # Frozen BN statistics come with the weights they normalise (e.g. an ImageNet
            # backbone written by `main.py convert`).
            stats, _, _ = merge_params(state["batch_stats"], source["batch_stats"])
            replicated = NamedSharding(mesh, PartitionSpec())
            state["params"] = jax.device_put(merged, replicated)
            state["batch_stats"] = jax.device_put(stats, replicated)
            log.info("initialised %d params from %s; %d kept from random init (%s)",
                     len(taken), train_cfg.init_from, len(kept), ", ".join(kept[:8]))

    if start_step >= num_steps:
        log.info("already trained: step %d >= train.num_steps %d", start_step, num_steps)
        checkpoints.close()
        return []

    eval_every = int(train_cfg.eval_every_steps)
    if eval_every and evaluate_fn is None:
        log.warning("config.train.eval_every_steps=%d but no evaluation was given: training "
                    "without (ifc_jax.api.train and the train command give one)", eval_every)
        eval_every = 0
    train_step = build_train_step(config, model, optimizer, schedule, mesh)
    batches = train_batches(config, start_batch=start_step, dataset=dataset)
    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0 or not train_cfg.tensorboard)
    interactive = sys.stderr.isatty() and jax.process_index() == 0
    history: list[dict[str, float]] = []
    previous_loss = None
    window_start, window_steps = time.perf_counter(), 0
    step = start_step

    with _PreemptionFlag() as preemption:
        try:
            while step < num_steps:
                batch = make_global_batch(select_model_inputs(next(batches)), mesh)
                state, metrics = train_step(state, batch)
                step += 1
                window_steps += 1
                # Check the previous step's loss: it has finished while this one runs, so
                # the device queue never drains.
                if previous_loss is not None:
                    _check_finite(float(previous_loss), step - 1, checkpoints)
                previous_loss = metrics["loss"]
                if step % train_cfg.log_every == 0 or step == num_steps:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _check_finite(values["loss"], step, checkpoints)
                    elapsed = time.perf_counter() - window_start
                    clips_per_s = window_steps * train_cfg.batch_size / max(elapsed, 1e-9)
                    eta = (num_steps - step) * elapsed / max(window_steps, 1)
                    values["clips_per_second"] = clips_per_s
                    writer.write_scalars(step, values)
                    history.append({"step": step, **values})
                    _append_metrics_line(workdir, history[-1])
                    line = _log_line(step, num_steps, values, clips_per_s, eta)
                    if interactive:
                        sys.stderr.write("\r\033[K")
                    log.info(line)
                    window_start, window_steps = time.perf_counter(), 0
                elif interactive:
                    sys.stderr.write(f"\r\033[Kstep {step}/{num_steps}")
                    sys.stderr.flush()
                checkpoints.save(step, state)
                if _any_process(preemption.requested):
                    _save_now(checkpoints, step, state)
                    log.warning("%s: saved a checkpoint at step %d; exiting",
                                preemption.signal_name or "another process was stopped",
                                step)
                    break
                if eval_every and step % eval_every == 0:
                    if step == num_steps:  # the last save comes after the loop otherwise
                        _save_now(checkpoints, step, state)
                    if interactive:
                        sys.stderr.write("\r\033[K")
                    # Not counted as training time in the next log line's clips/s and ETA.
                    window_start += _evaluate(evaluate_fn, step, state, writer)
            else:
                _save_now(checkpoints, step, state)
        finally:
            writer.flush()
            checkpoints.close()
    return history


def local_variables(state: dict[str, Any]) -> dict[str, Any]:
    """This process's copy of the state's replicated params and batch statistics, as numpy
    copies (the train step donates the state's buffers: nothing may keep referring to them)."""
    return jax.tree.map(lambda x: np.array(x.addressable_data(0)),
                        {"params": state["params"], "batch_stats": state["batch_stats"]})


def _evaluate(evaluate_fn: EvaluateFn, step: int, state: dict[str, Any], writer: Any) -> float:
    """Runs `evaluate_fn` on the state of `step`, reports its scalars; returns its seconds."""
    begin = time.perf_counter()
    scalars = {name: float(value) for name, value in
               evaluate_fn(step, local_variables(state)).items()}
    seconds = time.perf_counter() - begin
    if scalars:
        writer.write_scalars(step, {f"eval/{name}": value
                                    for name, value in {**scalars, "seconds": seconds}.items()})
        writer.flush()
        log.info(_eval_log_line(step, scalars, seconds))
    return seconds


def _eval_log_line(step: int, scalars: dict[str, float], seconds: float) -> str:
    metrics = " ".join(f"{name} {scalars[name]:.3f}" for name in EVAL_LOG_KEYS
                       if name in scalars)
    videos = f"{int(scalars['videos'])} videos, " if "videos" in scalars else ""
    return f"eval at step {step}: {metrics or 'no metrics'} ({videos}{seconds:.0f} s)"


METRICS_FILE = "train_metrics.jsonl"


def _append_metrics_line(workdir: str, values: dict[str, float]) -> None:
    """One JSON object per logged step in WORKDIR/train_metrics.jsonl (process 0 only).

    After a resume, steps logged past the last checkpoint are logged again; readers keep the
    last line of each step.
    """
    if jax.process_index() != 0:
        return
    storage.append_text(storage.join(workdir, METRICS_FILE), json.dumps(values) + "\n")


def read_metrics(workdir: str) -> dict[int, dict[str, float]]:
    """The logged metrics of a workdir by step (the last line of each step wins)."""
    path = storage.join(workdir, METRICS_FILE)
    by_step: dict[int, dict[str, float]] = {}
    if storage.isfile(path):
        with storage.open_file(path, "r") as stream:
            for line in stream:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a killed process
                    continue
                by_step[int(entry["step"])] = entry
    return by_step


def _save_now(checkpoints: Checkpoints, step: int, state: dict[str, Any]) -> None:
    """Saves `step` unless the periodic save already did."""
    if checkpoints.latest_step() != step:
        checkpoints.save(step, state, force=True)


def _check_finite(loss: float, step: int, checkpoints: Checkpoints) -> None:
    if not np.isfinite(loss):
        last = checkpoints.latest_step()
        raise TrainingDivergedError(
            f"loss became {loss} at step {step}; last checkpoint: "
            f"{'none' if last is None else f'step {last}'}. Lower config.train.lr or check "
            "the data")
