"""The embedded renderer is batch work: it runs below the service's CPU priority."""

import os

from service.generation import ShardProcess
from service.shard_worker import NICE


def test_the_shard_worker_renders_at_a_lower_priority_than_the_service():
    jobs = ShardProcess(timeout_s=300)
    jobs.start()
    try:
        jobs.warm()  # its imports are done: main() has set its priority by now
        child = os.getpriority(os.PRIO_PROCESS, jobs._proc.pid)
        assert child == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE) and NICE > 0
    finally:
        jobs.stop()
