"""Many files across machines on Ray (issue 13): nodes refuse to join without their stage env or with other versions;
a real cluster on this machine (three raylets on their own loopback addresses: a head running stage 1, two nodes
running stage 2) gives a local run's results and loses nothing when a node is killed mid-run; Ctrl-C leaves no
partial output; a stage no node runs is an error naming it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import envs
from orchestrator.cli import main
from orchestrator.cluster import actors, driver, nodes
from shared.errors import ExitCode

from .factories import cut_wav, repeat_wav

FAKE_TOKEN = "hf_" + "x" * 34  # never a real one: what must reach stage 2 by environment and appear nowhere else
# Two raylets on one machine: each node advertises its own loopback address (127.0.0.2, 127.0.0.3; Ray rewrites 127.0.0.1
# to the machine's address). RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 would bind loopback only, but Ray 2.60 then refuses
# `ray start --address` (a single-node cluster): multi-node Ray listens on every interface.
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_DISABLE_USAGE_STATS": "1",
    # a killed node is declared dead in seconds, not the default ~30 s
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "1000",
    "HF_HUB_OFFLINE": "1",
    "COLUMNS": "250",
}
FLAGS = ["--model", "bundled-tiny.en", "--language", "en", "--no_align", "--diarize", "--diarize_model", "bundled"]


# ---------------------------------------------------------------- without a cluster


def test_a_node_without_its_stage_env_refuses_to_join_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(envs, "env_python", lambda stage: tmp_path / stage / ".venv" / "bin" / "python")
    monkeypatch.setattr(nodes, "_ray_cli", _never)
    monkeypatch.setattr(nodes, "head_versions", _never)
    code = main(["node", "join", "127.0.0.1:1", "--stages", "align_diarize"])
    assert code == ExitCode.ENV_BROKEN
    error = capsys.readouterr().err
    assert "this node cannot run align_diarize" in error and "stagewhisper setup" in error


@pytest.mark.parametrize(("key", "other"), [("ray", "2.0.0"), ("python", "3.10.1")])
def test_a_node_with_other_ray_or_python_refuses_to_join(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str, other: str
) -> None:
    monkeypatch.setattr(nodes, "_ray_cli", _never)
    monkeypatch.setattr(nodes, "head_versions", lambda address: {**nodes.local_versions(), key: other})
    code = main(["node", "join", "10.0.0.1:6379", "--stages", ""])  # no stage: no env needed for this check
    assert code == ExitCode.ENV_BROKEN
    error = " ".join(capsys.readouterr().err.split())
    name = {"ray": "Ray", "python": "Python"}[key]
    assert f"refusing to join 10.0.0.1:6379: {name} {nodes.local_versions()[key]} here, {other} on the head" in error


def test_versions_compare_and_stages_parse() -> None:
    here = {"ray": "2.60.0", "python": "3.11.7", "schema": "1.5"}
    assert nodes.version_mismatch(here, here) is None
    assert nodes.version_mismatch({**here, "schema": "1.4"}, here) == "the stagewhisper schema 1.5 here, 1.4 on the head"
    assert nodes.parse_stages("align-diarize, transcribe") == ["align_diarize", "transcribe"]
    assert nodes.node_resources(["transcribe", "align_diarize"], 3) == {"stagewhisper_transcribe": 1, "stagewhisper_align_diarize": 3}
    assert main(["node", "join", "h:1", "--stages", "stage3"]) == ExitCode.USAGE


def test_threads_follow_the_local_rule_per_node() -> None:
    both = {"transcribe": 1, "align_diarize": 2}
    assert actors.worker_threads("transcribe", 16, both) == 8
    assert actors.worker_threads("align_diarize", 16, both) == 4
    assert actors.worker_threads("align_diarize", 16, {"align_diarize": 4}) == 4
    assert actors.worker_threads("align_diarize", 2, {"align_diarize": 4}) == 1


def test_jobs_cross_with_the_nodes_paths_as_placeholders(tmp_path: Path) -> None:
    local, remote = driver.remote_job("transcribe", ["in/a.wav", "--output_dir", "out", "--output_name", "a", "--model", "m"])
    assert remote == ["{audio}", "--output_dir", "{output_dir}", "--output_name", "a", "--model", "m"]
    assert local == {"{audio}": Path("in/a.wav"), "{output_dir}": Path("out")}
    argv = ["t.transcript.json", "--output_dir", "o", "--diarize", "--audio", "/data/a.wav"]
    local, remote = driver.remote_job("align_diarize", argv)
    assert remote == ["{transcript}", "--output_dir", "{output_dir}", "--diarize", "--audio", "{audio}"]
    assert driver.local_text("{transcript}: bad", local) == "t.transcript.json: bad"
    assert driver.without_secrets({"HF_TOKEN": "hf_x", "HF_HUB_OFFLINE": "1", "MY_API_KEY": "k"}) == {"HF_HUB_OFFLINE": "1"}


def test_a_token_given_to_the_driver_is_refused_and_a_missing_head_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "a.wav", "--ray", "127.0.0.1:9", "--diarize", "--hf_token", FAKE_TOKEN]) == ExitCode.USAGE
    error = capsys.readouterr().err
    assert "node join" in error and FAKE_TOKEN not in error
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert main(["run", "a.wav", "--ray", f"127.0.0.1:{port}", "--jobs", "2"]) == ExitCode.ENV_BROKEN
    error = " ".join(capsys.readouterr().err.split())
    assert "no Ray head answers at" in error and "--jobs has no effect with --ray" in error


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("must not be reached")


# ---------------------------------------------------------------- a real two-node cluster on this machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _marked(marker: str) -> list[int]:
    """Our processes whose environment carries MARKER (a node's raylet, its Ray workers, their stage workers) and their
    descendants (the raylet starts its agents without our variables): the cluster benchmark's finder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import cluster_scaling
    finally:
        sys.path.pop(0)
    return cluster_scaling.marked(marker, variable="STAGEWHISPER_TEST_NODE")


def _kill(marker: str) -> None:
    for pid in _marked(marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


class LocalCluster:
    """A head running stage 1 (127.0.0.2) and two nodes running stage 2 (127.0.0.3 with an HF token, 127.0.0.4), each
    its own raylet, all from this checkout and its stage envs."""

    def __init__(self, temp_dir: Path) -> None:
        self.port = _free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.temp_dir = temp_dir
        self.markers = {node: f"{node}-{uuid.uuid4().hex[:8]}" for node in ("head", "second", "third")}

    def env(self, node: str, **extra: str) -> dict[str, str]:
        return {**os.environ, **RAY_ENV, "STAGEWHISPER_TEST_NODE": self.markers[node], **extra}

    def start(self) -> None:
        light = ["--ray-arg=--object-store-memory=300000000"]
        head = ["stagewhisper", "node", "start", "--head", "--port", str(self.port), "--stages", "transcribe", "--node-ip", "127.0.0.2"]
        self._run([*head, *light, f"--ray-arg=--temp-dir={self.temp_dir}"], self.env("head"))
        for node, ip, extra in (("second", "127.0.0.3", {"HF_TOKEN": FAKE_TOKEN}), ("third", "127.0.0.4", {})):
            ports = [f"--ray-arg=--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "metrics-export-port")]
            join = ["stagewhisper", "node", "join", self.address, "--stages", "align_diarize", "--node-ip", ip, *light, *ports]
            self._run(join, self.env(node, **extra))

    @staticmethod
    def _run(command: list[str], env: dict[str, str]) -> None:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr + done.stdout

    def stop(self) -> None:
        for marker in self.markers.values():
            _kill(marker)


@pytest.fixture(scope="module")
def cluster(stage_envs: dict[str, Path]) -> Iterator[LocalCluster]:
    local = LocalCluster(Path(tempfile.mkdtemp(prefix="swray-", dir="/tmp")))  # short: Ray's socket paths have a limit
    try:
        local.start()
        yield local
    finally:
        local.stop()


def _speech(folder: Path, sample_wav: Path, count: int) -> list[Path]:
    folder.mkdir()
    files = []
    for index in range(count):
        files.append(folder / f"part{index:02d}.wav")
        cut_wav(sample_wav, files[-1], 6.0 + (index * 2.5) % 20, 5.0 + index % 3)
    return files


def _content(path: Path) -> dict[str, object]:
    document = json.loads(path.read_text())
    return {key: document[key] for key in ("segments", "speakers", "language", "text") if key in document}


@pytest.mark.slow
def test_a_run_on_two_nodes_equals_a_local_run_and_a_killed_node_loses_nothing(
    cluster: LocalCluster, tmp_path: Path, sample_wav: Path
) -> None:
    files = _speech(tmp_path / "in", sample_wav, 12)  # the 12 files
    local = subprocess.run(
        ["stagewhisper", "run", *map(str, files), *FLAGS, "-o", str(tmp_path / "local")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert local.returncode == 0, local.stderr
    out = tmp_path / "ray"
    command = ["stagewhisper", "run", *map(str, files), *FLAGS, "-o", str(out), "--ray", cluster.address]
    second = cluster.markers["second"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=cluster.env("head")) as run:
        victim = _wait_for_a_file_sent_to(second, out / "logs", deadline_s=150)
        if victim is not None:
            _kill(second)  # its raylet, its Ray workers and their stage workers, mid-file
        _, stderr = run.communicate(timeout=240)
    assert victim is not None, "no file was sent to the second node"
    assert run.returncode == 0, stderr
    retried = [line for line in stderr.splitlines() if line.startswith("retried: ")]
    assert len(retried) == 1 and f"{victim} (align_diarize): node " in retried[0] and "lost while on it; ran again on" in retried[0], stderr
    for file in files:  # every file once, equal to the local run's (transcripts and speakers)
        for name in (f"{file.stem}.transcript.json", f"{file.stem}.json", f"{file.stem}.rttm"):
            assert (out / name).is_file(), name
        assert _content(out / f"{file.stem}.json") == _content(tmp_path / "local" / f"{file.stem}.json")
        assert _content(out / f"{file.stem}.transcript.json") == _content(tmp_path / "local" / f"{file.stem}.transcript.json")
        assert (out / f"{file.stem}.rttm").read_text() == (tmp_path / "local" / f"{file.stem}.rttm").read_text()
        log = (out / "logs" / f"{file.name}.align_diarize.log").read_text()
        assert log.count("# exit status 0 on ") == 1, log  # written once
    transcript = json.loads((out / f"{files[0].stem}.transcript.json").read_text())
    assert transcript["audio"]["path"] == str(files[0]) and transcript["audio"]["resolved_path"] == str(files[0].resolve())
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))
    # the token reached the second node's stage 2 by its environment, and is nowhere in Ray's files or ours
    assert any("HF token from the node's environment" in log.read_text() for log in (out / "logs").glob("*.align_diarize.log"))
    for folder in (cluster.temp_dir, out):
        leaked = subprocess.run(["grep", "-rlF", FAKE_TOKEN, str(folder)], capture_output=True, text=True)
        assert leaked.stdout == "", leaked.stdout


def _wait_for_a_file_sent_to(marker: str, logs: Path, deadline_s: float) -> str | None:
    """The input whose stage 2 was just sent to an actor of the node marked MARKER (its log names the actor's pid)."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        pids = set(_marked(marker))
        for log in logs.glob("*.align_diarize.log") if logs.is_dir() else []:
            with contextlib.suppress(OSError):
                sent = re.findall(r"^# sent to .* \(actor pid (\d+)", log.read_text(), re.MULTILINE)
                if sent and int(sent[-1]) in pids and "# exit status" not in log.read_text():
                    return log.name.removesuffix(".align_diarize.log")
        time.sleep(0.05)
    return None


@pytest.mark.slow
def test_align_diarize_on_the_cluster_takes_transcripts_and_packs(cluster: LocalCluster, tmp_path: Path, sample_wav: Path) -> None:
    """Stage 1 on the cluster, then stage 2 alone from a transcript and from a pack: outputs named as locally (the
    pack's after the pack), the audio's paths this machine's, a rerun reused from the same cache."""
    files = _speech(tmp_path / "in", sample_wav, 2)
    out = tmp_path / "out"
    env = cluster.env("head")
    stage1 = ["stagewhisper", "transcribe", *map(str, files), *FLAGS[:4], "-o", str(out), "--ray", cluster.address]
    first = subprocess.run(stage1, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    pack = tmp_path / "moved.swpack"
    assert subprocess.run(["stagewhisper", "pack", str(out / f"{files[1].stem}.transcript.json"), "-o", str(pack)], env=env).returncode == 0
    inputs = [str(out / f"{files[0].stem}.transcript.json"), str(pack)]
    command = ["stagewhisper", "align-diarize", *inputs, *FLAGS[4:], "-o", str(out), "--ray", cluster.address]
    second = subprocess.run(command, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    result = json.loads((out / f"{files[0].stem}.json").read_text())
    assert result["speakers"] and result["audio"]["resolved_path"] == str(files[0].resolve())
    assert (out / "moved.json").is_file() and (out / "moved.rttm").is_file()
    again = subprocess.run(command, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and again.stderr.count("reused") >= 2, again.stderr


@pytest.mark.slow
def test_ctrl_c_on_the_driver_stops_the_cluster_work_and_leaves_no_partial_output(
    cluster: LocalCluster, tmp_path: Path, sample_wav: Path
) -> None:
    files = _speech(tmp_path / "in", sample_wav, 3)
    long = tmp_path / "in" / "long.wav"
    repeat_wav(sample_wav, long, times=8)  # 4 minutes: still decoding when Ctrl-C comes
    out = tmp_path / "out"
    command = ["stagewhisper", "transcribe", str(long), *map(str, files), *FLAGS[:4], "-o", str(out), "--ray", cluster.address]
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=cluster.env("head"), start_new_session=True
    ) as run:
        log = out / "logs" / "long.wav.transcribe.log"
        started = time.monotonic()
        while time.monotonic() - started < 120 and not (log.is_file() and "# sent to" in log.read_text()):
            time.sleep(0.1)
        time.sleep(3.0)
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    started = time.monotonic()  # the head's stage worker was stopped with the run, not left decoding
    while _stage_workers(cluster.markers["head"]) and time.monotonic() - started < 20:
        time.sleep(0.2)
    assert not _stage_workers(cluster.markers["head"])
    assert not (out / "long.transcript.json").exists()
    assert not [path for path in out.iterdir() if path.name.endswith(".tmp")]
    for file in files:  # each short file is either complete or absent
        assert not (out / f"{file.stem}.transcript.json").exists() or json.loads((out / f"{file.stem}.transcript.json").read_text())


def _stage_workers(marker: str) -> list[int]:
    found = []
    for pid in _marked(marker):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"stages.transcribe.worker" in command and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                found.append(pid)
    return found


@pytest.mark.slow
def test_a_stage_no_node_runs_is_an_error_naming_it(cluster: LocalCluster, tmp_path: Path, sample_wav: Path) -> None:
    """Both stage-2 nodes gone: `run --ray` does not hang on work no node can take, it names the stage (exit 6)."""
    for node in ("second", "third"):
        _kill(cluster.markers[node])
    files = _speech(tmp_path / "in", sample_wav, 1)
    command = ["stagewhisper", "run", *map(str, files), *FLAGS, "-o", str(tmp_path / "out"), "--ray", cluster.address]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=cluster.env("head", STAGEWHISPER_RAY_WAIT_S="8"), timeout=120)
    assert done.returncode == ExitCode.ENV_BROKEN, done.stderr
    error = " ".join(done.stderr.split())
    assert "runs stage align_diarize" in error or "could run stage align_diarize" in error, error
    assert f"stagewhisper node join {cluster.address} --stages align_diarize" in error
    assert time.monotonic() - started < 90
    assert not (tmp_path / "out" / f"{files[0].stem}.json").exists()
