"""Data-loader worker processes that outlive a stop signal sent to the whole process group.

``scancel``, SLURM's time limit and Ctrl-C signal every process of the job, data-loader workers
included. torch's workers die on a SIGTERM that does not come from their parent (and end on
SIGINT), and the main process then aborts at its next batch ("DataLoader worker ... is killed by
signal: Terminated") before :class:`cadet_d2.engine.signals.StopOnSignal` can write its
checkpoint. Workers therefore never act on the stop signals (``CADET.CHECKPOINT.STOP_SIGNALS``,
by name); they end with the main process.

* :func:`stop_signal_ignorer`: a ``worker_init_fn`` for loaders built here (the deterministic
  stream);
* :class:`WorkerSafeLoader`: wraps a loader built elsewhere (Detectron2's train and test
  loaders, whose ``worker_init_fn`` cannot be chosen in v0.6): the stop signals are blocked in
  the main process while it starts the workers, and forked workers keep that signal mask.
"""
from __future__ import annotations

import functools
import signal
from typing import Callable, Iterable, Iterator, Sequence

from ..layout import DEFAULT_STOP_SIGNALS


def _ignore_signals(names: tuple[str, ...], worker_id: int) -> None:
    for name in names:
        signal.signal(signal.Signals[name], signal.SIG_IGN)


def stop_signal_ignorer(names: Sequence[str] = DEFAULT_STOP_SIGNALS) -> Callable[[int], None]:
    """A ``worker_init_fn`` (picklable) with which each worker ignores the signals ``names``."""
    return functools.partial(_ignore_signals, tuple(names))


class WorkerSafeLoader:
    """Iterates ``loader``; the worker processes it starts (at ``iter()`` for a DataLoader, at the
    first ``next()`` for an iterable wrapping one, such as Detectron2's aspect-ratio grouping)
    start with the stop signals blocked. A signal that reaches the main process meanwhile is
    delivered when they are unblocked, right after. ``signals``: the stop signals' names.
    ``len()`` and attributes are the loader's."""

    def __init__(self, loader: Iterable, signals: Sequence[str] = DEFAULT_STOP_SIGNALS):
        self.loader = loader
        self.signals = [signal.Signals[name] for name in signals]

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name in ("loader", "signals"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
        try:
            batches = iter(self.loader)
            try:
                first = next(batches)
            except StopIteration:
                return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        yield first
        yield from batches
