"""One CPU thread policy for the command line, the app and notebooks (measured: ``bench/under_load.py``,
docs/RESULTS.md "Speed on a busy machine").

A user's machine is rarely idle. torch's CPU kernels run in an OpenMP team (GNU libgomp in torch's Linux
wheels) whose threads, by default, spin for a while at every barrier before sleeping. When other programs
keep the cores busy, a spinning thread holds a core that its descheduled sibling needs, and every small
parallel operation waits for it: ``prolab evaluate`` of 20 images took 21-33 s under load instead of 7-8 s.

The policy:

- ``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep at once. libgomp reads it once, when torch loads it,
  so ``import prolab`` sets it (unless already set) while torch is not imported yet; every entry point
  (``prolab`` CLI, ``python app.py``, ``import prolab`` in a notebook) imports prolab before torch.
- intra-op threads: torch's default (one per physical core) or ``OMP_NUM_THREADS``; but one thread when
  torch was imported before prolab with the spinning policy (a notebook that ran ``import torch`` first):
  a single thread has no team to wait for. That changes torch for the whole process (the user's own work
  too), so it is said in a warning.
- inter-op threads: 1 (prolab runs no parallel graph branches; each extra pool is idle threads).

Applied by ``prolab.cli.main``, ``app.main.main`` and the first
:meth:`prolab.model.PropertySegmenter.from_pretrained` of a process (a notebook's entry point).

``PROLAB_THREAD_POLICY=off`` leaves torch and OpenMP exactly as they are (for measuring the policy).
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Set in the environment to ``off`` to leave thread settings alone.
POLICY_ENV = "PROLAB_THREAD_POLICY"
WAIT_POLICY = "PASSIVE"


@dataclass(frozen=True)
class ThreadPolicy:
    """What is in force after :func:`apply_thread_policy`."""
    wait_policy: str  # OMP_WAIT_POLICY as libgomp read it ("default" when unset)
    intra_op: int  # torch.get_num_threads()
    inter_op: int  # torch.get_num_interop_threads()
    applied: bool  # False: PROLAB_THREAD_POLICY=off

    def describe(self) -> str:
        return (f"OMP_WAIT_POLICY {self.wait_policy}, {self.intra_op} intra-op / {self.inter_op} inter-op "
                f"torch threads{'' if self.applied else ' (policy off)'}")


_WAIT_POLICY_AT_TORCH_LOAD: str | None = None  # OMP_WAIT_POLICY when prolab saw torch load (None: unknown)
_APPLIED = False


def applied_once() -> bool:
    """Whether :func:`apply_thread_policy` has run in this process (the CLI, the app or a model load)."""
    return _APPLIED


def policy_enabled() -> bool:
    return os.environ.get(POLICY_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def set_wait_policy() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if torch is not loaded yet and the user has not chosen one.
    Called by ``import prolab``; does nothing once torch is imported (OpenMP has read it by then)."""
    global _WAIT_POLICY_AT_TORCH_LOAD
    if not policy_enabled() or "torch" in sys.modules:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    _WAIT_POLICY_AT_TORCH_LOAD = os.environ["OMP_WAIT_POLICY"]


def _wait_policy_in_force() -> str:
    """The wait policy libgomp read: known if prolab was imported before torch, else today's environment
    (the best guess: a notebook's environment rarely changes between ``import torch`` and here)."""
    value = _WAIT_POLICY_AT_TORCH_LOAD if _WAIT_POLICY_AT_TORCH_LOAD is not None \
        else os.environ.get("OMP_WAIT_POLICY", "")
    return value.strip().upper() or "default"


def apply_thread_policy(threads: int | None = None) -> ThreadPolicy:
    """Apply the thread policy to torch (idempotent) and return what is in force.

    ``threads``: intra-op threads to use (a ``--threads`` flag); None: ``OMP_NUM_THREADS`` or torch's default,
    except 1 when OpenMP spins (torch imported before prolab, or ``OMP_WAIT_POLICY`` set otherwise).
    """
    global _APPLIED
    set_wait_policy()
    import torch

    _APPLIED = True
    if not policy_enabled():
        return ThreadPolicy(_wait_policy_in_force(), torch.get_num_threads(), torch.get_num_interop_threads(),
                            applied=False)
    wait = _wait_policy_in_force()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    elif wait != WAIT_POLICY and not os.environ.get("OMP_NUM_THREADS") and torch.get_num_threads() > 1:
        log.warning("OpenMP spins while waiting (OMP_WAIT_POLICY %s): torch now uses one thread; import prolab "
                 "before torch, or set OMP_WAIT_POLICY=PASSIVE, to use all cores", wait)
        torch.set_num_threads(1)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only possible before the first inter-op work; then it stays as it is
            pass
    return ThreadPolicy(wait, torch.get_num_threads(), torch.get_num_interop_threads(), applied=True)
