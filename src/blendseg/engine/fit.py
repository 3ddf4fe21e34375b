"""The training loop: :func:`fit` drives :func:`~blendseg.engine.train.train_step` over the data, with time
budget, checkpoints, evaluation, early stopping and faults, and keeps where the run is in a :class:`TrainState`
(what a checkpoint saves and a resume restores).

A plain function over plain parts; the model computes its own losses in ``forward`` (so DDP sees every parameter
that takes part in a loss).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..dist import agree, broadcast_object, gather_objects, get_rank, get_world_size, is_dist, is_main_process
from ..errors import DataError
from ..inference.precision import missing_instructions
from ..overrides import to_dict
from .checkpoint import load_checkpoint, save_checkpoint
from .memory import estimate_memory
from .runlog import RunLog, save_train_batch
from .train import (
    NonFiniteLoss,
    amp_context,
    amp_dtype,
    build_optimizer,
    lr_factor,
    prepare_model,
    resolve_solver,
    restore_rng,
    rng_state,
    step_batch,
    train_step,
)
from .watch import LearningWatch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what schedulers (SLURM, Kubernetes) and Ctrl-C send


class TrainingStopped(RuntimeError):
    """Training ended early on purpose (a stop signal, a non-finite loss): a one-line ``message`` and the process
    ``exit_code`` for the command line; what was saved is said in the message."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclasses.dataclass
class TrainState:
    """Where a run is: the iteration ``it``, the seconds ``spent`` before this process took over (a resumed run's),
    the best selection metric so far (``best``, its name ``best_metric``, its iteration ``best_it``) and the
    evaluations since it improved (``stale``), the non-finite steps skipped, the unreadable images skipped, and this
    process's place in its data (``epoch``, ``batch``: micro-batches into the epoch)."""

    it: int = 0
    spent: float = 0.0
    best: float = -1.0
    best_metric: str = ""
    best_it: int = 0
    stale: int = 0
    nonfinite: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)
    epoch: int = 0
    batch: int = 0

    # field -> its key in a checkpoint (the names a user reads in last.pt; elapsed_s and the per-rank places are
    # written by fit, which knows the clock and the other ranks)
    SAVED_AS = {
        "it": "iteration",
        "best": "best",
        "best_metric": "best_metric",
        "best_it": "best_iteration",
        "stale": "stale_evaluations",
        "nonfinite": "nonfinite_steps",
        "skipped": "skipped_images",
        "epoch": "epoch",
        "batch": "epoch_batch",
    }

    def saved(self) -> dict:
        return {key: getattr(self, name) for name, key in self.SAVED_AS.items()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, rank: int) -> TrainState:
        """The state a checkpoint saved, with rank ``rank``'s place in its data (each rank has its own: with
        aspect-ratio grouping each rank's epochs have their own length; a rank beyond them takes rank 0's)."""
        places = ckpt["data_places"]
        epoch, batch = places[rank] if rank < len(places) else places[0]
        defaults = cls()  # each field's type, from its default
        state = cls(**{name: type(getattr(defaults, name))(ckpt[key]) for name, key in cls.SAVED_AS.items()})
        return dataclasses.replace(state, spent=float(ckpt["elapsed_s"]), epoch=int(epoch), batch=int(batch))


def selection_metric(metrics: dict) -> tuple[str, float] | None:
    """What chooses best.pt and stops early: ("panoptic/PQ", value) for panoptic evaluations, else "segm/AP" (mask
    methods), else "bbox/AP" (FCOS); None without an evaluation."""
    for section, key in (("panoptic", "PQ"), ("segm", "AP"), ("bbox", "AP")):
        values = metrics.get(section)
        if isinstance(values, dict) and key in values:
            return f"{section}/{key}", float(values[key])
    return None


def infinite(loader, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, int, object]]:
    """(epoch, index of the next batch in it, batch) forever, from batch ``start`` of ``epoch`` (a resumed run
    continues the interrupted epoch where it stopped: the training loader's batch sampler can start anywhere)."""
    while True:
        batches = getattr(loader, "batch_sampler", None)
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch, start)
        elif start:
            raise ValueError("this loader cannot start an epoch part-way (no EpochBatches batch sampler)")
        i = start - 1
        for i, batch in enumerate(loader, start):
            yield epoch, i + 1, batch
        if i < 0:  # not one batch in a whole epoch: the loop would spin here for ever
            raise DataError(_no_batch_message(loader))
        epoch, start = epoch + 1, 0


def _no_batch_message(loader) -> str:
    dataset = getattr(loader, "dataset", None)
    images = f"{len(dataset)} training images" if dataset is not None else "the training images"
    size = getattr(getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None), "batch_size", None)
    batch = f"batches of {size} per process" if size else "full batches"
    return (
        f"an epoch of the training data gives no batch: {images} (those with annotations) for {batch}, and "
        "incomplete batches are dropped (so are leftovers of each aspect-ratio group); lower solver.ims_per_batch, "
        "set data.aspect_ratio_grouping=false, or add images"
    )


def _resume(last: Path, model: nn.Module, optimizer, scaler, device: torch.device) -> TrainState | None:
    """The state of ``last`` with the model, optimiser, scaler and this rank's generators restored from it; None
    without one. Rank 0 reads the file and every rank gets its contents: a node without the run folder on its disk
    resumes where the others do."""
    if is_main_process():  # temporary files of saves a kill -9 interrupted
        for stale in last.parent.glob("*.pt.*.tmp"):
            stale.unlink(missing_ok=True)
    ckpt = broadcast_object(load_checkpoint(last) if is_main_process() and last.is_file() else None)
    if ckpt is None:
        return None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    restore_rng(ckpt["rng"], device)
    if ckpt.get("scaler"):  # an fp16 run's
        scaler.load_state_dict(ckpt["scaler"])
    state = TrainState.from_checkpoint(ckpt, get_rank())
    if is_main_process():
        print(f"resumed from {last} at iteration {state.it}")
    return state


def fit(
    model: nn.Module,
    train_loader,
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device,
    evaluate_fn: Callable[[nn.Module], dict] | None = None,
    resume: bool = False,
    extra_state: dict | None = None,
    class_names: list[str] | None = None,
) -> dict:
    """Train ``model`` per ``cfg.solver``; writes ``weights/last.pt`` (and ``best.pt``) and the run log
    (:mod:`~blendseg.engine.runlog`: train_log.jsonl, results.csv / .png, train_batch*.jpg with ``class_names``).

    Under ``solver.max_minutes`` the run stops when the budget is spent, whatever the iteration count, and the LR
    steps happen at the same fractions of the budget as of ``max_iter`` (``max_iter`` only sets those fractions).
    Returns the last evaluation metrics (or {}, plus ``skipped_images`` when unreadable training images were
    skipped), with ``best``: the metric that chose ``best.pt`` (:func:`selection_metric`), its value and
    iteration. ``solver.patience`` = N > 0 stops once N evaluations in a row (every ``eval_period``) did not
    improve it (``early_stop`` in the metrics).

    Faults: SIGTERM / SIGINT finish the current step, save ``last.pt`` and raise :class:`TrainingStopped` (a
    second signal acts at once); a non-finite loss raises :class:`TrainingStopped` without saving over the last
    good ``last.pt`` (``solver.skip_nonfinite`` = N skips up to N such steps instead, with a warning each); any
    other exception (a data error, a bug) saves ``last.pt`` before propagating.
    """
    steps_per_epoch = len(train_loader) // max(cfg.solver.accumulate, 1)  # the loader's batches are micro-batches
    out_dir, solver = Path(out_dir), resolve_solver(cfg.solver, steps_per_epoch, get_world_size())
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    model = prepare_model(model, solver, device)
    estimate = estimate_memory(model, cfg, device, lambda: amp_context(solver, device))  # CUDA only
    if estimate is not None and is_main_process():
        print(estimate.message(step_batch(solver, get_world_size())[1], solver.accumulate), flush=True)
    optimizer = build_optimizer(model, solver)
    dtype = amp_dtype(solver, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 only
    if solver.amp and dtype is None and is_main_process():
        print(
            f"warning: solver.amp: {missing_instructions('bf16')}; bf16 autocast would run emulated, slower "
            "than fp32: training in fp32"
        )
    last = out_dir / "weights" / "last.pt"
    state = (_resume(last, model, optimizer, scaler, device) if resume else None) or TrainState()
    ddp = model
    if is_dist():
        ddp = nn.parallel.DistributedDataParallel(  # buffers not re-sent each forward (detectron2's choice)
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    budget = solver.max_minutes * 60.0
    t0 = time.perf_counter() - state.spent
    log = RunLog(out_dir, budget, solver.max_iter, state.it, state.spent, tensorboard=cfg.log.tensorboard)

    def save(path: Path, every_rank: bool = False) -> None:
        """``every_rank``: called by all ranks together, so the checkpoint gets each one's generators and place in
        its data (:func:`gather_objects`); otherwise this process's alone (rank 0 saving best.pt, an error on
        one). The weights in the standard (contiguous) layout whatever the training's memory format, so that a
        checkpoint reads the same everywhere (safetensors refuses channels-last strides)."""
        mine = (rng_state(device), [state.epoch, state.batch])
        ranks = gather_objects(mine) if every_rank else [mine]
        if is_main_process():
            save_checkpoint(
                path,
                {
                    "model": {k: v.contiguous() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "config": to_dict(cfg),
                    "elapsed_s": time.perf_counter() - t0,
                    "rng": [r for r, _ in ranks],
                    "data_places": [p for _, p in ranks],
                    **state.saved(),
                    **(extra_state or {}),
                },
            )

    def evaluate() -> dict:
        """Evaluate; on the main process keep best.pt by :func:`selection_metric` and count the evaluations since
        it improved; the metrics get a ``best`` entry (metric, value, iteration)."""
        lr = optimizer.param_groups[0]["lr"]
        model.eval()
        metrics = evaluate_fn(model)
        model.train()
        if metrics:
            log.evaluation(state.it, state.epoch, lr, time.perf_counter() - t0, metrics)
        chosen = selection_metric(metrics) if metrics else None
        if chosen is None:
            return metrics
        name, value = chosen
        if value > state.best:
            state.best, state.best_metric, state.best_it, state.stale = value, name, state.it, 0
            save(out_dir / "weights" / "best.pt")
        else:
            state.stale += 1
        return {**metrics, "best": {"metric": state.best_metric, "value": state.best, "iteration": state.best_it}}

    data, metrics, early = infinite(train_loader, state.epoch, state.batch), {}, False
    watch = LearningWatch(solver.warmup_iters)
    model.train()
    stop = _StopSignals()
    try:
        while budget > 0 or state.it < solver.max_iter:  # a time budget alone ends a budgeted run
            progress = state.it
            if budget > 0:
                elapsed = agree(time.perf_counter() - t0, "mean")  # ranks agree
                if elapsed >= budget:
                    break
                progress = elapsed / budget * solver.max_iter
            for g in optimizer.param_groups:
                g["lr"] = solver.base_lr * lr_factor(state.it, progress, solver)
            losses, instances, ips = _step(
                ddp, optimizer, scaler, data, state, solver, device, log, out_dir, class_names
            )
            if losses is not None:
                if is_main_process():
                    for msg in watch.step(state.it - 1, instances, losses["loss"]):
                        log.warn(msg)
                log.step(state.it, time.perf_counter() - t0, optimizer.param_groups[0]["lr"], losses, ips)
            if solver.checkpoint_period and state.it % solver.checkpoint_period == 0:
                save(last, every_rank=True)
            if evaluate_fn is not None and solver.eval_period and state.it % solver.eval_period == 0:
                metrics = evaluate() if budget > 0 or state.it < solver.max_iter else metrics
                if solver.patience and agree(float(state.stale >= solver.patience), "max"):  # rank 0's count
                    early = True
                    if is_main_process():
                        log.info(
                            f"early stop at iteration {state.it}: {state.best_metric} has not improved for "
                            f"{solver.patience} evaluations (solver.patience); best {state.best:.2f} at "
                            f"iteration {state.best_it}, kept in weights/best.pt"
                        )
                    break
            signum = stop.received()
            if signum:
                save(last, every_rank=True)
                name = signal.Signals(signum).name
                raise TrainingStopped(
                    f"stopped by {name} at iteration {state.it}: saved {last}; continue with --resume", 128 + signum
                )
    except TrainingStopped:
        log.close()
        raise
    except NonFiniteLoss as e:
        log.close()
        kept = f"{last} keeps the last checkpoint" if last.is_file() else "no checkpoint was written before it"
        raise TrainingStopped(f"stopped: {e}; {kept} (solver.skip_nonfinite=N skips such steps)", 1) from None
    except BaseException:
        log.close()
        save(last)
        if is_main_process():
            print(f"\ntraining stopped at iteration {state.it}; saved {last}")
        raise
    finally:
        stop.restore()
    log.bar.close()
    save(last, every_rank=True)
    if evaluate_fn is not None and not early:  # an early stop has just evaluated these weights
        metrics = evaluate()
    if early:
        metrics = {**metrics, "early_stop": {"iteration": state.it, "patience": solver.patience}}
    log.close()
    if state.skipped:
        metrics = {**metrics, "skipped_images": state.skipped}
        if is_main_process():
            print(f"{len(state.skipped)} unreadable training image(s) skipped (listed in metrics.json)")
    return metrics


def _step(
    model: nn.Module,
    optimizer,
    scaler,
    data: Iterator,
    state: TrainState,
    solver,
    device: torch.device,
    log: RunLog,
    out_dir: Path,
    class_names: list[str] | None,
) -> tuple[dict[str, float] | None, int, float]:
    """One iteration: ``solver.accumulate`` micro-batches drawn (the first steps' drawn to train_batch*.jpg),
    unreadable images reported once each, the training step; ``state`` advanced. Returns (the losses, the batch's
    instance count, images per second), with no losses for a non-finite step skipped under
    ``solver.skip_nonfinite`` (a warning; beyond that count the :class:`NonFiniteLoss` propagates)."""
    it = state.it
    batches = []
    for _ in range(solver.accumulate):
        state.epoch, state.batch, batch = next(data)
        batches.append(batch)
    targets = [t for _, tg in batches for t in tg]
    if it < 3 and is_main_process() and class_names is not None:  # what the model is trained on
        save_train_batch(*batches[0], class_names, out_dir / f"train_batch{it}.jpg")
        log.image(f"train_batch/{it}", out_dir / f"train_batch{it}.jpg", it)
    for t in targets:
        for msg in t.pop("skipped", ()):
            if msg not in state.skipped:  # once per file, however often it comes round
                state.skipped.append(msg)
                log.warn(f"warning: skipped an unreadable training image: {msg}")
    instances = sum(len(t["boxes"]) for t in targets)
    tic = time.perf_counter()
    try:
        losses = train_step(model, optimizer, scaler, batches, solver, device, it)
    except NonFiniteLoss as e:
        if state.nonfinite >= solver.skip_nonfinite:
            raise
        state.nonfinite += 1
        state.it = it + 1
        log.warn(f"warning: {e}; step skipped ({state.nonfinite} of solver.skip_nonfinite={solver.skip_nonfinite})")
        return None, instances, 0.0
    state.it = it + 1
    return losses, instances, len(targets) * get_world_size() / max(time.perf_counter() - tic, 1e-9)


class _StopSignals:
    """SIGTERM / SIGINT noted instead of acted on, so the loop can finish its step and save; the handlers are put
    back after the first one (a second signal acts at once) and when training ends. Every process stops at the same
    iteration (the flag is max-reduced)."""

    def __init__(self) -> None:
        self.signum = 0
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum: int, frame) -> None:
        self.signum = signum
        signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))

    def received(self) -> int:
        return int(agree(self.signum, "max"))

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
