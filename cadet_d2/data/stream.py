"""A deterministic, resumable training data stream.

Detectron2's ``TrainingSampler`` restarts its infinite stream from the beginning when a run
resumes, and its augmentations draw from numpy's global RNG inside the data-loader workers, so a
resumed run sees different images and different augmentations than an uninterrupted one. This
module replaces that stream with one in which everything is a pure function of a seed:

* **Stream positions.** The training stream is an infinite sequence of positions ``k = 0, 1, 2,
  ...``. Epoch ``e = k // n`` (``n`` images) visits the images in the order of a permutation
  drawn from ``RandomState(derive_seed(seed, "perm", e))``; position ``k`` shows image
  ``perm_e[k % n]``.
* **Ranks.** Rank ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...`` (its local position
  ``m`` is global position ``m * W + r``).
* **Batches.** Each rank cuts its positions into batches of ``IMS_PER_BATCH / W``. With
  ``DATALOADER.ASPECT_RATIO_GROUPING`` the positions go to two buckets (width > height or not,
  from the registered image size, as Detectron2's ``AspectRatioGroupedDataset`` does after
  mapping; resizing and flipping keep the orientation) and a batch is emitted when a bucket is
  full. Batch ``i`` of rank ``r`` is therefore a pure function of ``(seed, i, r, W, batch size,
  image sizes)``; resuming at iteration ``i`` replays the (cheap, metadata-only) plan up to
  batch ``i`` and starts loading there.
* **Gradient accumulation.** With ``SOLVER.ACCUM_STEPS`` = A each iteration (optimizer step)
  draws A consecutive batches (micro-batches): iteration ``i`` uses batches ``i*A .. i*A+A-1``,
  so a resume at iteration ``i`` starts at batch ``i*A``.
* **Augmentation.** The mapper runs for position ``k`` with python's ``random``, numpy's
  global RNG and torch's CPU generator seeded from ``derive_seed(seed, k, attempt)``; the
  previous RNG states are restored afterwards, so the model's own randomness (drop path, ROI
  sampling) is untouched even with ``DATALOADER.NUM_WORKERS 0``.
* **Workers.** Whole batches are handed to the data-loader workers by PyTorch, which returns
  them in order; the result does not depend on ``NUM_WORKERS``.
* **Load failures.** A sample whose file fails to load (:class:`~cadet_d2.data.errors.DataError`)
  is replaced by a fallback image drawn from ``derive_seed(seed, "fallback", k, attempt)``; the
  failure is counted in the main process (exactly, in stream order, whatever ``NUM_WORKERS``)
  and logged with its path. More than ``CADET.DATA.MAX_LOAD_FAILURES`` failures (per rank) stop
  the run with the list (:class:`LoadFailureLimitError`). The list is part of the checkpoint.
"""
from __future__ import annotations

import logging
import zlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.utils.data as torchdata

from ..utils.rng import seeded_rngs
from .errors import DataError
from .workers import DEFAULT_STOP_SIGNALS, stop_signal_ignorer

logger = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_ATTEMPTS_PER_SAMPLE = 16  # a sample whose fallbacks all fail stops the run


class LoadFailureLimitError(RuntimeError):
    """More training samples failed to load than ``CADET.DATA.MAX_LOAD_FAILURES`` allows."""

    def __init__(self, message: str, failures: list[dict]):
        super().__init__(message)
        self.failures = failures


def _key(value: int | str) -> int:
    return int(value) if not isinstance(value, str) else zlib.crc32(value.encode("utf-8"))


def derive_seed(*keys: int | str) -> int:
    """A 32-bit seed that is a pure function of ``keys`` (non-negative ints or strings)."""
    return int(np.random.SeedSequence([_key(k) for k in keys]).generate_state(1, np.uint32)[0])


class StreamIndex:
    """Dataset index of each global stream position: epoch ``k // n`` uses a seeded permutation."""

    def __init__(self, num_images: int, seed: int):
        if num_images <= 0:
            raise ValueError("the training stream needs at least one image")
        self.n, self.seed = int(num_images), int(seed)
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def permutation(self, epoch: int) -> np.ndarray:
        """The image order of ``epoch`` (``numpy.random.RandomState``: stable across numpy versions)."""
        if epoch != self._epoch:
            self._perm = np.random.RandomState(derive_seed(self.seed, "perm", epoch)).permutation(self.n)
            self._epoch = epoch
        return self._perm

    def __call__(self, position: int) -> int:
        epoch, j = divmod(int(position), self.n)
        return int(self.permutation(epoch)[j])


def plan_batches(
    num_images: int,
    seed: int,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    groups: Sequence[int] | None = None,
    start_iter: int = 0,
) -> Iterator[list[int]]:
    """The global stream positions of each batch of ``rank``, from batch ``start_iter`` on.

    ``groups`` (one 0/1 entry per image: 0 = wider than high) turns on aspect-ratio grouping;
    then the plan is replayed from batch 0 without loading anything.
    """
    if batch_size <= 0:
        raise ValueError(f"batch size per rank must be positive, got {batch_size}")
    if groups is None:
        m = int(start_iter) * batch_size
        while True:
            yield [(m + i) * world_size + rank for i in range(batch_size)]
            m += batch_size
    index = StreamIndex(num_images, seed)
    buckets: tuple[list[int], list[int]] = ([], [])
    batch, m = 0, 0
    while True:
        k = m * world_size + rank
        m += 1
        bucket = buckets[groups[index(k)]]
        bucket.append(k)
        if len(bucket) == batch_size:
            if batch >= start_iter:
                yield list(bucket)
            bucket.clear()
            batch += 1


class BatchPlan:
    """Re-iterable batch sampler for ``torch.utils.data.DataLoader`` (see :func:`plan_batches`)."""

    def __init__(self, num_images: int, seed: int, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 groups: Sequence[int] | None = None, start_iter: int = 0):
        self.num_images, self.seed, self.batch_size = num_images, seed, batch_size
        self.rank, self.world_size, self.groups, self.start_iter = rank, world_size, groups, start_iter

    def __iter__(self) -> Iterator[list[int]]:
        return plan_batches(self.num_images, self.seed, self.batch_size, rank=self.rank,
                            world_size=self.world_size, groups=self.groups, start_iter=self.start_iter)


class StreamDataset(torchdata.Dataset):
    """Map-style dataset over stream positions: ``ds[k]`` maps the image of position ``k``.

    Returns ``{"sample": mapped dict or None, "failures": [...], "position": k}``; a failure is
    ``{"path", "problem", "line", "position"}``. ``sample`` is None only when every attempt failed.
    """

    def __init__(self, dataset: Sequence[dict], mapper: Callable[[dict], dict | None], seed: int,
                 max_attempts: int = 1):
        self.dataset, self.mapper = dataset, mapper
        self.max_attempts = max(1, int(max_attempts))
        self.set_seed(seed)

    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)
        self.index = StreamIndex(len(self.dataset), self.seed)

    def __len__(self) -> int:  # not used for sampling (the stream is infinite)
        return len(self.dataset)

    def image_index(self, position: int, attempt: int = 0, failed: Sequence[int] = ()) -> int:
        """The image shown at ``position``; for ``attempt`` > 0 the fallback after failures: a
        seeded draw among the images not in ``failed``."""
        if attempt == 0:
            return self.index(position)
        excluded = sorted(set(failed))
        if len(excluded) >= len(self.dataset):
            excluded = []
        rs = np.random.RandomState(derive_seed(self.seed, "fallback", position, attempt))
        i = int(rs.randint(len(self.dataset) - len(excluded)))
        for e in excluded:  # the i-th image not excluded
            if e <= i:
                i += 1
        return i

    def __getitem__(self, position: int) -> dict[str, Any]:
        failures: list[dict] = []
        tried: list[int] = []
        for attempt in range(self.max_attempts):
            index = self.image_index(position, attempt, tried)
            record = self.dataset[index]
            tried.append(index)
            with seeded_rngs(derive_seed(self.seed, position, attempt)):
                try:
                    sample = self.mapper(record)
                except DataError as e:
                    failures.append({"path": str(e.path), "problem": str(e.problem), "line": e.line,
                                     "position": int(position)})
                    continue
            if sample is None:
                failures.append({"path": str(record.get("file_name", "?")), "problem": "the mapper returned None",
                                 "line": None, "position": int(position)})
                continue
            return {"sample": sample, "failures": failures, "position": int(position)}
        return {"sample": None, "failures": failures, "position": int(position)}


def _collate(batch: list) -> list:
    return batch


def format_failure(f: dict) -> str:
    where = f"{f['path']}:{f['line']}" if f.get("line") is not None else f["path"]
    it = f" (iteration {f['iteration']})" if f.get("iteration") is not None else ""
    return f"{where}: {f['problem']}{it}"


class DeterministicTrainLoader:
    """The training loader: yields lists of mapped dicts (one list per iteration, this rank's share).

    Set where to start with :meth:`set_start` (the trainer does it after resuming) before the
    first batch is drawn; nothing is loaded until then. It is also a checkpointable object
    (``state_dict``/``load_state_dict``: the seed and the load failures so far).
    """

    def __init__(
        self,
        dataset: Sequence[dict],
        mapper: Callable[[dict], dict | None],
        *,
        seed: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        max_load_failures: int = 0,
        batches_per_iteration: int = 1,
        pin_memory: bool = False,
        stop_signals: Sequence[str] = DEFAULT_STOP_SIGNALS,
    ):
        self.batch_size, self.rank, self.world_size = int(batch_size), int(rank), int(world_size)
        # micro-batches per trainer iteration (SOLVER.ACCUM_STEPS); pinned host memory for CUDA copies
        self.batches_per_iteration, self.pin_memory = int(batches_per_iteration), bool(pin_memory)
        self.num_workers, self.max_load_failures = int(num_workers), int(max_load_failures)
        self.stop_signals = tuple(stop_signals)  # ignored by the workers (they end with this process)
        self.groups: list[int] | None = None
        if aspect_ratio_grouping:
            self.groups = [0 if d["width"] > d["height"] else 1 for d in _iter_records(dataset)]
        self.dataset = StreamDataset(dataset, mapper, seed,
                                     max_attempts=min(self.max_load_failures + 1, MAX_ATTEMPTS_PER_SAMPLE))
        self.start_iter = 0
        self.load_failures: list[dict] = []
        self._gathered_failures: list[list[dict]] | None = None
        self._started = False

    @property
    def seed(self) -> int:
        return self.dataset.seed

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    def set_seed(self, seed: int) -> None:
        self._check_not_started("set_seed")
        self.dataset.set_seed(seed)

    def set_start(self, iteration: int) -> None:
        """Start the stream at the first batch of trainer iteration ``iteration`` (batch
        ``iteration * batches_per_iteration``)."""
        self._check_not_started("set_start")
        self.start_iter = int(iteration) * self.batches_per_iteration

    def _check_not_started(self, what: str) -> None:
        if self._started:
            raise RuntimeError(f"DeterministicTrainLoader.{what}() after the first batch was drawn")

    def plan(self, start_iter: int | None = None) -> BatchPlan:
        return BatchPlan(self.num_images, self.seed, self.batch_size, rank=self.rank, world_size=self.world_size,
                         groups=self.groups, start_iter=self.start_iter if start_iter is None else start_iter)

    def __iter__(self) -> Iterator[list[dict]]:
        # A generator: the torch DataLoader (and its workers) start at the first next(), i.e.
        # after resume_or_load() has set the seed and start iteration.
        self._started = True
        loader = torchdata.DataLoader(
            self.dataset, batch_sampler=self.plan(), num_workers=self.num_workers, collate_fn=_collate,
            # own generator: creating the iterator must not draw from torch's global RNG
            generator=torch.Generator().manual_seed(derive_seed(self.seed, "loader")),
            pin_memory=self.pin_memory, worker_init_fn=stop_signal_ignorer(self.stop_signals),
        )
        batch_index = self.start_iter
        for batch in loader:
            samples = []
            iteration = batch_index // self.batches_per_iteration
            for item in batch:
                for failure in item["failures"]:
                    self._record_failure(dict(failure, iteration=iteration))
                if item["sample"] is None:
                    raise LoadFailureLimitError(
                        f"[cadet] stream position {item['position']}: {len(item['failures'])} consecutive images "
                        "failed to load:\n  " + "\n  ".join(format_failure(f) for f in item["failures"]),
                        list(self.load_failures))
                samples.append(item["sample"])
            batch_index += 1
            yield samples

    def _record_failure(self, failure: dict) -> None:
        self.load_failures.append(failure)
        n, limit = len(self.load_failures), self.max_load_failures
        if n > limit:
            raise LoadFailureLimitError(
                f"[cadet] {n} training samples failed to load, more than CADET.DATA.MAX_LOAD_FAILURES = {limit}; "
                "stopping. Failures:\n  " + "\n  ".join(format_failure(f) for f in self.load_failures)
                + "\nFix or remove these files (`python tools/check_data.py ROOT` lists every problem) "
                "or raise CADET.DATA.MAX_LOAD_FAILURES.",
                list(self.load_failures))
        logger.warning(f"[cadet] training sample skipped ({n}/{limit} load failures allowed), "
                       f"a fallback image is used instead: {format_failure(failure)}")

    # ---- checkpointing -----------------------------------------------------------------
    def gather(self) -> None:
        """Collect every rank's failure list (all ranks call this at checkpoint iterations)."""
        from detectron2.utils import comm

        self._gathered_failures = comm.all_gather(list(self.load_failures))

    def drop_gathered(self) -> None:
        self._gathered_failures = None

    def state_dict(self) -> dict:
        per_rank = self._gathered_failures or [list(self.load_failures)]  # kept until drop_gathered()
        return {
            "version": STATE_VERSION, "seed": self.seed, "num_images": self.num_images,
            "batch_size": self.batch_size, "world_size": self.world_size,
            "aspect_ratio_grouping": self.groups is not None, "load_failures": per_rank,
            "batches_per_iteration": self.batches_per_iteration,
        }

    def load_state_dict(self, state: dict) -> None:
        here = {"num_images": self.num_images, "batch_size": self.batch_size, "world_size": self.world_size,
                "aspect_ratio_grouping": self.groups is not None}
        changed = {k: (state.get(k), v) for k, v in here.items() if state.get(k) != v}
        if state.get("batches_per_iteration", 1) != self.batches_per_iteration:  # SOLVER.ACCUM_STEPS
            changed["batches_per_iteration"] = (state.get("batches_per_iteration", 1), self.batches_per_iteration)
        if changed:
            logger.warning("[cadet] the training stream differs from the checkpoint's "
                           f"({', '.join(f'{k}: {a} -> {b}' for k, (a, b) in changed.items())}); "
                           "the resumed run continues a different image order (not an exact resume)")
        self.set_seed(int(state["seed"]))
        per_rank = state.get("load_failures") or [[]]
        self.load_failures = list(per_rank[self.rank]) if self.rank < len(per_rank) else []


def _iter_records(dataset: Sequence[dict]) -> Iterator[dict]:
    for i in range(len(dataset)):
        yield dataset[i]


def resolve_stream_seed(cfg) -> int:
    """``cfg.SEED`` when >= 0; else a random seed shared by all ranks (saved in checkpoints, reused
    on resume)."""
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    from detectron2.utils import comm

    seed = int(comm.shared_random_seed())
    logger.info(f"[cadet] SEED < 0: the training stream uses the random seed {seed} (saved in checkpoints)")
    return seed


def check_batch_split(ims_per_batch: int, world_size: int) -> None:
    """Each of the ``world_size`` processes loads ``ims_per_batch // world_size`` images a step:
    ValueError unless that is a whole number >= 1."""
    if ims_per_batch < world_size or ims_per_batch % world_size:
        raise ValueError(f"SOLVER.IMS_PER_BATCH = {ims_per_batch} is not divisible by the {world_size} processes: "
                         f"each process takes SOLVER.IMS_PER_BATCH / {world_size} "
                         "images per step; use a multiple of it")


def build_deterministic_train_loader(cfg, mapper: Callable[[dict], dict | None],
                                     seed: int | None = None) -> DeterministicTrainLoader:
    """The :class:`DeterministicTrainLoader` of ``cfg.DATASETS.TRAIN`` (Detectron2's dataset dicts
    and empty-annotation filter; batch ``SOLVER.IMS_PER_BATCH`` split over ranks). It samples
    uniformly, like ``TrainingSampler`` (``validate_cadet_config`` rejects another sampler)."""
    from detectron2.data import DatasetFromList, get_detection_dataset_dicts
    from detectron2.utils import comm

    world_size, rank = comm.get_world_size(), comm.get_rank()
    check_batch_split(cfg.SOLVER.IMS_PER_BATCH, world_size)
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    loader = DeterministicTrainLoader(
        DatasetFromList(dicts, copy=False, serialize=True), mapper,
        seed=resolve_stream_seed(cfg) if seed is None else seed,
        batch_size=cfg.SOLVER.IMS_PER_BATCH // world_size, rank=rank, world_size=world_size,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING, num_workers=cfg.DATALOADER.NUM_WORKERS,
        max_load_failures=cfg.CADET.DATA.MAX_LOAD_FAILURES,
        batches_per_iteration=cfg.SOLVER.ACCUM_STEPS,
        pin_memory=cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available(),
        stop_signals=cfg.CADET.CHECKPOINT.STOP_SIGNALS,
    )
    logger.info(f"[cadet] deterministic training stream: {loader.num_images} images, seed {loader.seed}, "
                f"{loader.batch_size} images per batch on each of {world_size} rank(s), aspect-ratio grouping "
                f"{'on' if loader.groups is not None else 'off'}, {loader.num_workers} workers, "
                f"{loader.batches_per_iteration} batch(es) per iteration, pinned memory {loader.pin_memory}")
    return loader
