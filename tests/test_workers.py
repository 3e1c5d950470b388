"""Data-loader workers survive the stop signals sent to them (cadet_d2/data/workers.py)."""
from __future__ import annotations

import os
import signal
import time

import pytest
import torch.utils.data as torchdata

from cadet_d2.data.workers import WorkerSafeLoader, stop_signal_ignorer
from cadet_d2.layout import DEFAULT_STOP_SIGNALS


class SlowPids(torchdata.Dataset):
    """Item i: (i, the pid of the worker that loaded it), slowly enough for a signal in between."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        time.sleep(0.05)
        return i, os.getpid()


def _loader() -> torchdata.DataLoader:
    return torchdata.DataLoader(SlowPids(), batch_size=None, num_workers=2, multiprocessing_context="fork")


def _signal_workers_after_first(loader, signum: int) -> list[int]:
    """Iterate ``loader``; after the first item, send ``signum`` to every worker seen so far."""
    items, batches = [], iter(loader)
    first = next(batches)
    items.append(first[0])
    time.sleep(0.2)  # the second worker has loaded its first item too
    for pid in {first[1]} | {p for p in _worker_pids()}:
        os.kill(pid, signum)
    time.sleep(0.2)
    items += [i for i, _ in batches]
    return items


def _worker_pids() -> set[int]:
    """The main process's live children (the data-loader workers)."""
    me = os.getpid()
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                pids.add(int(entry))
    return pids


@pytest.mark.parametrize("name", DEFAULT_STOP_SIGNALS)
def test_workers_of_a_wrapped_loader_outlive_a_stop_signal(name):
    signum = signal.Signals[name]
    previous = signal.signal(signum, lambda *_: None)  # the main process handles it (as StopOnSignal does)
    try:
        assert _signal_workers_after_first(WorkerSafeLoader(_loader()), signum) == list(range(12))
    finally:
        signal.signal(signum, previous)


class Dispositions(torchdata.Dataset):
    """Item: (names of the signals this worker blocks, names of those it ignores)."""

    NAMES = ("SIGHUP", "SIGTERM", "SIGINT", "SIGUSR1")

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        return ({n for n in self.NAMES if signal.Signals[n] in blocked},
                {n for n in self.NAMES if signal.getsignal(signal.Signals[n]) == signal.SIG_IGN})


@pytest.mark.parametrize("signals", [["SIGHUP"], list(DEFAULT_STOP_SIGNALS), []])
def test_workers_are_shielded_from_the_configured_stop_signals_only(signals):
    """CADET.CHECKPOINT.STOP_SIGNALS decides what the workers block (WorkerSafeLoader) or ignore
    (the deterministic stream's worker_init_fn); other signals keep their default action."""
    def loader(**kw) -> torchdata.DataLoader:
        return torchdata.DataLoader(Dispositions(), batch_size=None, num_workers=1, multiprocessing_context="fork",
                                    **kw)

    nums = [signal.Signals[n] for n in Dispositions.NAMES]
    # this process's dispositions as a shell would leave them (nohup ignores SIGHUP), restored after
    previous = {s: signal.signal(s, signal.SIG_DFL) for s in nums}
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, nums)
    try:
        assert [blocked for blocked, _ in WorkerSafeLoader(loader(), signals)] == [set(signals)] * 2
        assert [ignored for _, ignored in loader(worker_init_fn=stop_signal_ignorer(signals))] == [set(signals)] * 2
        assert [blocked | ignored for blocked, ignored in loader()] == [set()] * 2
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_workers_of_a_plain_loader_die_on_sigterm():
    """The failure the wrapper prevents: torch's worker dies on SIGTERM from anyone but its parent."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        with pytest.raises(RuntimeError, match=r"DataLoader worker .*(killed by signal|exited unexpectedly)"):
            _signal_workers_after_first(_loader(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_wrapper_keeps_length_attributes_and_the_signal_mask():
    loader = _loader()
    wrapped = WorkerSafeLoader(loader)
    assert len(wrapped) == 12 and wrapped.num_workers == 2 and wrapped.dataset is loader.dataset
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert [i for i, _ in wrapped] == list(range(12))
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before  # unblocked again in the main process
