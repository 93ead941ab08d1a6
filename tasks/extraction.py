"""From a container log to the output fields of the terminal event.

Reads the log through the API server (capped and streamed), parses the
runner's report from it, and turns the result into a ``LogOutcome``: the
runner's facts when the report was read, else the raw log as stdout and the
reason there is no report.
"""

from __future__ import annotations

from typing import Any

from tasks import report as reports
from tasks.events import CapturedOutput, LogStatus, ResourceUsage
from tasks.logs import LogNotFoundError, open_log
from tasks.outcomes import LogOutcome, RunnerFacts
from tasks.settings import LogSettings


def read_outcome(
    core_v1: Any,
    *,
    namespace: str,
    pod: str,
    container: str,
    settings: LogSettings,
    keep_bytes: int = 1_000_000,
) -> LogOutcome:
    """Read and parse the log of one container.

    ``keep_bytes`` caps what is kept of each stream and of the raw log: an
    event cannot carry more than one Kafka message anyway. Raises
    ``LogReadError`` when the read failed in a way that may pass.
    """
    try:
        with open_log(
            core_v1,
            namespace=namespace,
            pod=pod,
            container=container,
            limit_bytes=settings.max_bytes,
            timeout_seconds=settings.read_timeout_seconds,
        ) as stream:
            parsed = reports.parse_report(
                stream, max_raw_bytes=keep_bytes, max_output_bytes=keep_bytes
            )
            cut_by_limit = stream.cut_by_limit
    except LogNotFoundError as error:
        return LogOutcome(LogStatus.NOT_FOUND, error=str(error))
    return outcome_of(parsed, cut_by_limit=cut_by_limit, limit_bytes=settings.max_bytes)


def outcome_of(
    parsed: reports.ReportParseResult, *, cut_by_limit: bool, limit_bytes: int
) -> LogOutcome:
    """Turn a parse result into what the terminal event carries."""
    problem = _problem(parsed, cut_by_limit=cut_by_limit, limit_bytes=limit_bytes)
    notes: tuple[str, ...] = ()
    if parsed.headers_seen > 1:
        # Something in the container printed a report-shaped header, or the
        # runner ran twice; the last header counts.
        notes = (f"the log holds {parsed.headers_seen} report headers",)
    if parsed.report is not None:
        return LogOutcome(
            LogStatus.READ,
            facts=facts_of(parsed.report),
            report_problem=problem,
            notes=notes,
        )
    return LogOutcome(
        LogStatus.READ,
        raw=parsed.raw_log,
        raw_truncated=parsed.raw_log_truncated or cut_by_limit,
        report_problem=problem,
        notes=notes,
    )


def facts_of(report: reports.Report) -> RunnerFacts:
    header = report.header
    usage = header.usage
    return RunnerFacts(
        exit_code=header.exit_code,
        signal=header.signal,
        timed_out=header.timed_out,
        outcome=header.outcome.value,
        stdout=_output(report.stdout, header.stdout, complete=report.complete),
        stderr=_output(report.stderr, header.stderr, complete=report.complete),
        resources=ResourceUsage(
            wall_seconds=usage.wall_seconds,
            cpu_user_seconds=usage.user_cpu_seconds,
            cpu_system_seconds=usage.system_cpu_seconds,
            # The children's peak RSS measures the program itself. The
            # cgroup's peak also counts page cache and the runner, and it
            # counts the whole host where no container isolates the run.
            peak_memory_bytes=(
                usage.max_rss_bytes
                if usage.max_rss_bytes is not None
                else usage.cgroup_memory_peak_bytes
            ),
            cgroup_memory_peak_bytes=usage.cgroup_memory_peak_bytes,
        ),
    )


def _output(
    data: bytes, summary: reports.StreamSummary, *, complete: bool
) -> CapturedOutput:
    return CapturedOutput.from_bytes(
        data,
        original_size_bytes=summary.original_bytes,
        truncated=summary.truncated
        or not complete
        or len(data) < summary.original_bytes,
    )


def _problem(
    parsed: reports.ReportParseResult, *, cut_by_limit: bool, limit_bytes: int
) -> str | None:
    failure = parsed.failure
    if failure is None:
        return None
    text = f"{failure.reason.value}: {failure.detail}"
    if failure.field:
        text += f" (field {failure.field})"
    if failure.reason is reports.FailureReason.TRUNCATED and cut_by_limit:
        text += f"; the log read stopped at its limit of {limit_bytes} bytes"
    return text
