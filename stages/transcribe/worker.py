"""`python -m stages.transcribe.worker`: stage 1 as a long-lived worker (stages.common.worker) that imports its
backend once, keeps the model loaded, and decodes the short files it holds in shared batches (a 5 s memo does not
fill a batch alone). Threads and device come from the environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stages.common.worker import GroupedJob, StageCommands, serve

from .cli import STAGE, FileJob, apply_device, build_parser, read_job, run, write_transcript

if TYPE_CHECKING:
    from .pipeline.batched_run import PreparedFile

FILES_PER_GROUP = 8  # the most files decoded together (the orchestrator sends a worker this many at once)
# Longer files fill batches on their own; held together they would only add up in memory (1 h is 230 MB as float32).
LONGEST_GROUPED_S = 120.0
Waiting = tuple[GroupedJob, FileJob, "PreparedFile"]  # a file read and chunked, waiting for its shared batches


def transcribe_group(jobs: list[GroupedJob]) -> None:
    """Each file read, chunked and its language chosen on its own; the short ones then decoded in shared batches and
    written first (stage 2 is waiting for them), the long ones after, each alone, read again then (holding them while
    the others decode would only add up in memory). Each file's outputs are written as the one-file CLI writes them,
    and a file's error is its own."""
    from .pipeline.batched_run import prepare_batched, transcribe_batched_together

    waiting: list[Waiting] = []
    alone: list[GroupedJob] = []
    for item in jobs:
        try:
            with item.output():
                job = read_job(item.args)
                if job.options.decoding.get("backend") == "mlx_whisper" or job.audio.info.duration > LONGEST_GROUPED_S:
                    alone.append(item)
                    continue
                waiting.append((item, job, prepare_batched(job.audio, job.options, on_progress=item.report)))
        except Exception as error:  # noqa: BLE001 - this file's failure, reported as the one-file CLI would
            item.fail(error)
    for together in _sharing_batches(waiting):
        transcripts = transcribe_batched_together([prepared for _, _, prepared in together])
        for (item, job, _), transcript in zip(together, transcripts, strict=True):
            try:
                with item.output():
                    write_transcript(job, transcript)
            except Exception as error:  # noqa: BLE001
                item.fail(error)
            item.succeeded()  # at once: stage 2 takes it while the others are written
    for item in alone:
        try:
            with item.output():
                run(item.args)
        except Exception as error:  # noqa: BLE001
            item.fail(error)
        item.succeeded()


def _sharing_batches(waiting: list[Waiting]) -> list[list[Waiting]]:
    """Files that can share batches: the same loaded model and the same decoding settings but the language."""
    groups: dict[tuple[int, str], list[Waiting]] = {}
    for entry in waiting:
        prepared = entry[2]
        groups.setdefault((id(prepared.loaded), prepared.shared_settings().model_dump_json()), []).append(entry)
    return list(groups.values())


def main() -> int:
    apply_device()
    commands = StageCommands(STAGE, parse=build_parser().parse_args, run=run, label=lambda args: args.audio)
    return serve(commands, group=transcribe_group, group_limit=FILES_PER_GROUP)


if __name__ == "__main__":
    raise SystemExit(main())
