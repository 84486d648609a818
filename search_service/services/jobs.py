"""Background ingest jobs: durable in the store, run by worker threads (one by default).

A job goes queued -> running -> done | failed | cancelled. Its handler stores the result in one
transaction at the very end, and only while the job is still running there, so a job never leaves
half-indexed data: cancelling flips the state in the store at once (the result can no longer be
committed) and asks the worker to stop at its next batch; a stop or a crash mid-run leaves the job
"running" or puts it back to "queued", and every such job is queued again when the service starts,
to run from scratch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Gauge

from search_service.domain import JOB_STATES, UNFINISHED_STATES, JobRecord
from search_service.storage.jobs import JobRepository
from search_service.video import VideoCancelled

log = structlog.get_logger(__name__)

JOBS = Gauge("facesearch_video_jobs", "Video ingest jobs in the store, by state", ["state"])

# A worker with nothing to do looks at the queue this often even when nobody signals it.
_IDLE_POLL_S = 5.0
# A worker whose store failed (a full disk, say) waits this long before it tries again.
_STORE_RETRY_S = 5.0
# How long a stop waits for a worker to finish its current batch.
_STOP_TIMEOUT_S = 60.0


class JobFailed(Exception):
    """The job cannot succeed (a file that is no video, the embedder refusing); the message is the
    job's error text, shown to clients as is."""


@dataclass(frozen=True)
class JobControl:
    """Given to a handler: poll ``should_stop`` (cheap) and ``report`` progress as it goes."""

    should_stop: Callable[[], bool]
    report: Callable[[float, int, int], None]  # fraction done 0..1, frames processed, faces found


# Runs one job in a worker thread. It stores the result itself (conditionally on the job still
# running); it raises JobFailed for an expected failure and VideoCancelled when told to stop.
JobHandler = Callable[[JobRecord, JobControl], None]


class JobRunner:
    def __init__(
        self,
        jobs: JobRepository,
        handler: JobHandler,
        workers: int = 1,
        store_retry_s: float = _STORE_RETRY_S,
    ) -> None:
        self._jobs = jobs
        self._store_retry_s = store_retry_s
        self._handler = handler
        self._workers = workers
        self._wake = threading.Condition()
        self._signalled = False
        self._stopping = False
        self._cancelled: set[int] = set()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Queue again what a previous process left running, then start the workers."""
        requeued = self._jobs.requeue_interrupted()
        if requeued:
            log.info("re-queued jobs interrupted by a stop or crash", jobs=requeued)
        self.refresh_metrics()
        for number in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"video-job-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the workers; a running job stops at its next batch and is queued again."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(_STOP_TIMEOUT_S)
            if thread.is_alive():
                log.warning("a video job worker did not stop in time", thread=thread.name)

    def notify(self) -> None:
        """A job was queued."""
        with self._wake:
            self._signalled = True
            self._wake.notify()
        self.refresh_metrics()

    def cancel(self, job_id: int) -> JobRecord | None:
        """Cancel a queued or running job; None when the job is not one (missing or finished)."""
        job = self._jobs.set_state(job_id, "cancelled", only_from=UNFINISHED_STATES)
        if job is not None:
            with self._wake:
                self._cancelled.add(job_id)
            self.refresh_metrics()
            log.info("video job cancelled", job_id=job_id, video_id=job.video_id)
        return job

    def refresh_metrics(self) -> None:
        counts = self._jobs.counts()
        for state in JOB_STATES:
            JOBS.labels(state).set(counts.get(state, 0))

    def _work(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                job = self._jobs.claim()
                if job is not None:
                    self._run(job)
                    continue
            except Exception:
                # The worker must outlive a failing store: a job it could not mark failed stays
                # "running" and is queued again at the next start.
                log.exception("video job worker: the store failed; trying again", retry_s=self._store_retry_s)
                with self._wake:
                    self._wake.wait(self._store_retry_s)
                continue
            with self._wake:
                if not (self._signalled or self._stopping):
                    self._wake.wait(_IDLE_POLL_S)
                self._signalled = False

    def _should_stop(self, job_id: int) -> bool:
        with self._wake:
            return self._stopping or job_id in self._cancelled

    def _run(self, job: JobRecord) -> None:
        self.refresh_metrics()
        log.info("video job started", job_id=job.id, video_id=job.video_id, attempt=job.attempts)
        control = JobControl(
            should_stop=lambda: self._should_stop(job.id),
            report=lambda fraction, frames, faces: self._jobs.report_progress(
                job.id, fraction, frames, faces
            ),
        )
        try:
            self._handler(job, control)
        except VideoCancelled:
            with self._wake:
                cancelled = job.id in self._cancelled
            if not cancelled:  # the service is stopping: the next start runs the job again
                self._jobs.set_state(job.id, "queued", only_from=("running",))
        except JobFailed as error:
            self._fail(job, str(error))
        except Exception as error:
            log.exception("video job crashed", job_id=job.id)
            self._fail(job, f"internal error: {type(error).__name__}: {error}")
        finally:
            with self._wake:
                self._cancelled.discard(job.id)
            self.refresh_metrics()

    def _fail(self, job: JobRecord, error: str) -> None:
        self._jobs.set_state(job.id, "failed", only_from=("running",), error=error)
        log.warning("video job failed", job_id=job.id, video_id=job.video_id, error=error)
