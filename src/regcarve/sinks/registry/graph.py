"""Tasks run by a pool of worker threads as soon as what they wait for has finished.

A task may `need` others (it runs only if they all succeeded; otherwise it fails with the first
failure among them, without running) and run `after` others (it waits for them, whatever their
outcome: a mount waits for the upload it mounts from, and uploads itself if that failed). Finished
tasks are handed to the caller's thread one by one, so that what it prints and records is done in
one place. An interrupt there stops the workers from starting anything new; threads are daemons, so
a request in flight does not hold the process up.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass


@dataclass(eq=False, slots=True)  # one or two per tag: 50,000 tags make 100,000
class Task:
    name: str
    run: Callable[[], object]
    needs: tuple["Task", ...] = ()
    result: object = None
    error: BaseException | None = None
    failed_need: "Task | None" = None  # the need whose failure this task inherited
    _waiting: int = 0
    _dependents: list["Task"] | None = None  # made when a first task waits for this one

    @property
    def root_cause(self) -> "Task":
        task = self
        while task.failed_need is not None:
            task = task.failed_need
        return task


class TaskGraph:
    """`expected`: the exceptions a task may fail with; anything else is a bug, and stops the graph."""

    def __init__(self, workers: int, expected: tuple[type[BaseException], ...]):
        self.workers = max(1, workers)
        self.expected = expected
        self.tasks: list[Task] = []
        self._ready: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._finished: queue.SimpleQueue[Task | BaseException] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def add(self, name: str, run: Callable[[], object], needs: Sequence[Task] = (),
            after: Sequence[Task] = ()) -> Task:
        task = Task(name, run, tuple(needs))
        waits_for = [*task.needs, *(t for t in after if t not in task.needs)]
        for dep in waits_for:
            if dep._dependents is None:
                dep._dependents = []
            dep._dependents.append(task)
        task._waiting = len(waits_for)
        self.tasks.append(task)
        return task

    def run(self) -> Iterator[Task]:
        """Every task, as it finishes. Raises what a task raised that was not expected."""
        threads = [threading.Thread(target=self._work, name=f"regcarve-push-{i}", daemon=True)
                   for i in range(self.workers)]
        for t in threads:
            t.start()
        try:
            for task in self.tasks:
                if task._waiting == 0:
                    self._ready.put(task)
            for _ in range(len(self.tasks)):
                item = self._finished.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._stop.set()
            for _ in threads:
                self._ready.put(None)

    def _work(self) -> None:
        while not self._stop.is_set():
            task = self._ready.get()
            if task is None or self._stop.is_set():
                return
            try:
                task.result = task.run()
                task.run = _ran  # what it called with (an image, a manifest) is let go
            except BaseException as e:
                if not isinstance(e, self.expected):  # a bug: the caller's thread raises it
                    self._finished.put(e)
                    return
                task.error = e
            self._done(task)

    def _done(self, task: Task) -> None:
        """Hand the task over and release what waited for it (failing those that needed it)."""
        self._finished.put(task)
        released = []
        with self._lock:
            for dep in task._dependents or ():
                if task.error is not None and task in dep.needs and dep.failed_need is None:
                    dep.failed_need = task
                dep._waiting -= 1
                if dep._waiting == 0:
                    released.append(dep)
        for dep in released:
            if dep.failed_need is not None:
                dep.error = dep.failed_need.error
                self._done(dep)
            else:
                self._ready.put(dep)


def _ran() -> object:
    raise RuntimeError("a task runs once")
