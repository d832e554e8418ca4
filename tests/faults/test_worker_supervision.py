"""The fault suites' supervisor (tests/faults/conftest.py `_supervise`) never restarts a worker silently: a killed
worker is replaced, and the exit is recorded on the stack with its time, exit code, test and log tail (printed in the
terminal summary). Tests that kill neither Redis nor the worker fail if it exits during them (`_worker_stays_up`)."""
from __future__ import annotations

import signal

import pytest

from tests.faults.conftest import wait_until, worker_answers


@pytest.mark.worker_may_restart
def test_a_killed_worker_is_replaced_and_the_restart_is_recorded(private_stack, request):
    stack = private_stack
    # An earlier test may have broken the worker (a Redis kill): kill the running one, not one being replaced.
    wait_until(lambda: not stack.restarting and stack.worker.proc.poll() is None and worker_answers(stack), 180,
               message=f"no steady worker to kill:\n{stack.worker.log_tail()}")
    before = len(stack.restarts)
    victim, node = stack.worker, stack.worker_node
    victim.proc.send_signal(signal.SIGKILL)  # our own worker only, by its pid
    wait_until(lambda: len(stack.restarts) > before and stack.restarts[before].replacement, 180,
               message=f"the supervisor did not replace the killed worker:\n{stack.worker.log_tail()}")
    record = stack.restarts[before]
    assert record.exit_code == -signal.SIGKILL, record
    assert record.node == node and record.test == request.node.nodeid, record
    assert record.at and record.log_tail, record
    assert stack.worker is not victim and victim in stack.earlier_workers
    assert record.replacement == stack.worker_node != node
    assert worker_answers(stack, timeout=5), stack.worker.log_tail()
