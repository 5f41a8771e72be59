"""Stage environments (orchestrator.envs) and the subprocess environment (orchestrator.runtime).

Most tests run on a throwaway copy of the layout under tmp_path with a fake uv, so the real envs are
never synced, modified or deleted; a few read-only ones check the real envs' health.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import envs, runtime
from shared.errors import ExitCode, StageError
from shared.provenance import THREAD_ENV_VARS, recorded_settings

REPO = Path(__file__).resolve().parents[1]

# Stands in for uv: records its arguments, prints like uv, exits with FAKE_UV_EXIT.
FAKE_UV = """
import os, sys
with open(os.environ["FAKE_UV_CALLS"], "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
print("Resolved 3 packages in 1ms")
print("Checked 3 packages in 1ms", flush=True)
sys.exit(int(os.environ.get("FAKE_UV_EXIT", "0")))
"""


@pytest.fixture
def fake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repo's env layout (no venvs) that envs.* now treat as the repo root."""
    root = tmp_path / "repo"
    (root / "envs").mkdir(parents=True)
    (root / "pyproject.toml").write_bytes((REPO / "pyproject.toml").read_bytes())
    for stage in envs.STAGES:
        (root / "envs" / stage).mkdir()
        for name in ("pyproject.toml", "uv.lock"):
            (root / "envs" / stage / name).write_bytes((REPO / "envs" / stage / name).read_bytes())
    monkeypatch.setattr(envs, "repo_root", lambda: root)
    monkeypatch.delenv(envs.BACKEND_ENV, raising=False)
    return root


def _make_venv_python(stage: str) -> None:
    """What uv would leave behind: an executable venv python (here: a link to this interpreter)."""
    python = envs.env_python(stage)
    python.parent.mkdir(parents=True, exist_ok=True)
    if not python.exists():
        python.symlink_to(sys.executable)


@pytest.fixture
def fake_uv(fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Replaces uv and the import check; returns the file listing every uv call."""
    script = tmp_path / "fake_uv.py"
    script.write_text(FAKE_UV, encoding="utf-8")
    calls = tmp_path / "uv_calls.txt"
    calls.touch()
    monkeypatch.setenv("FAKE_UV_CALLS", str(calls))
    monkeypatch.setattr(envs, "uv_command", lambda: [sys.executable, str(script)])

    def fake_health(stage: str) -> dict[str, str]:
        _make_venv_python(stage)
        return {"python": "3.11.7", "numpy": f"{envs.NUMPY_MAJOR[stage]}.0.0"}

    monkeypatch.setattr(envs, "health_check", fake_health)
    return calls


def _uv_calls(calls: Path) -> list[str]:
    return calls.read_text(encoding="utf-8").splitlines()


def _stamp_mtimes() -> dict[str, int]:
    return {stage: envs.stamp_path(stage).stat().st_mtime_ns for stage in envs.STAGES}


# ---------------------------------------------------------------- setup / stamp


def test_setup_all_is_idempotent_and_skips_uv_second_time(fake_uv: Path) -> None:
    first = envs.setup_all(quiet=True)
    assert [s.reused for s in first.values()] == [False, False]
    assert len(_uv_calls(fake_uv)) == 2
    assert "Checked 3 packages" in envs.log_path("transcribe").read_text(encoding="utf-8")
    mtimes = _stamp_mtimes()

    second = envs.setup_all(quiet=True)

    assert [s.reused for s in second.values()] == [True, True]
    assert len(_uv_calls(fake_uv)) == 2, "the matching stamp must short-circuit uv"
    assert _stamp_mtimes() == mtimes, "the stamp must not be rewritten"
    assert second["align_diarize"].versions["numpy"].startswith("1.")
    assert envs.ensure_ready("transcribe") == envs.env_python("transcribe")


def test_setup_resyncs_changed_env_and_everything_when_forced(fake_uv: Path, fake_root: Path) -> None:
    envs.setup_all(quiet=True)
    with (fake_root / "envs" / "align_diarize" / "uv.lock").open("a", encoding="utf-8") as lock:
        lock.write("\n# changed\n")

    changed = envs.setup_all(quiet=True)
    assert {s: changed[s].reused for s in envs.STAGES} == {"transcribe": True, "align_diarize": False}
    assert len(_uv_calls(fake_uv)) == 3

    forced = envs.setup_all(quiet=True, force=True)
    assert not any(s.reused for s in forced.values())
    assert len(_uv_calls(fake_uv)) == 5


def test_sync_command_uses_lock_and_mlx_extra(fake_uv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs.setup_all(quiet=True)
    transcribe_call, align_call = _uv_calls(fake_uv)
    assert transcribe_call.startswith("sync --locked --compile-bytecode --project ")
    assert align_call.startswith("sync --locked --compile-bytecode --project ")
    if sys.platform.startswith("linux"):
        assert transcribe_call.endswith("--extra cpu")
    assert "--extra" not in align_call

    monkeypatch.setenv(envs.BACKEND_ENV, "cuda")
    assert envs.mlx_extra("transcribe", system="Linux") == "cuda"
    assert envs.mlx_extra("transcribe", system="Darwin") is None
    assert envs.mlx_extra("align_diarize", system="Linux") is None
    monkeypatch.setenv(envs.BACKEND_ENV, "tpu")
    with pytest.raises(StageError) as err:
        envs.mlx_extra("transcribe", system="Linux")
    assert err.value.exit_code == ExitCode.USAGE


def test_failed_sync_names_the_log_and_leaves_no_stamp(fake_uv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    envs.setup_all(quiet=True)
    monkeypatch.setenv("FAKE_UV_EXIT", "1")
    with pytest.raises(StageError) as err:
        envs.setup_all(quiet=True, force=True)
    assert err.value.exit_code == ExitCode.ENV_BROKEN
    assert str(envs.log_path("transcribe")) in err.value.message
    assert "\n" not in err.value.message
    assert not envs.stamp_path("transcribe").exists()
    with pytest.raises(StageError, match="stagewhisper setup"):
        envs.ensure_ready("transcribe")


def test_missing_uv_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envs.shutil, "which", lambda name: None)
    monkeypatch.setattr(envs.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StageError) as err:
        envs.uv_command()
    assert err.value.exit_code == ExitCode.ENV_BROKEN
    assert "pip install uv" in err.value.message


# ---------------------------------------------------------------- ensure_ready


def test_ensure_ready_on_missing_venv_is_env_broken(fake_root: Path) -> None:
    with pytest.raises(StageError) as err:
        envs.ensure_ready("transcribe")
    assert err.value.exit_code == ExitCode.ENV_BROKEN
    assert "'transcribe' is missing or broken" in err.value.message
    assert "stagewhisper setup" in err.value.message


def test_ensure_ready_without_stamp_or_with_stale_lock(fake_uv: Path, fake_root: Path) -> None:
    _make_venv_python("align_diarize")
    with pytest.raises(StageError, match="setup has not completed"):
        envs.ensure_ready("align_diarize")

    envs.setup_all(quiet=True)
    assert envs.ensure_ready("align_diarize") == envs.env_python("align_diarize")
    (fake_root / "envs" / "align_diarize" / "uv.lock").write_text("changed\n", encoding="utf-8")
    with pytest.raises(StageError, match="changed since the last setup.*stagewhisper setup"):
        envs.ensure_ready("align_diarize")


# ---------------------------------------------------------------- health


def test_health_check_reports_broken_import(fake_root: Path) -> None:
    # The orchestrator's own python has none of the stage-1 stack: a stand-in for a broken env.
    _make_venv_python("transcribe")
    with pytest.raises(StageError) as err:
        envs.health_check("transcribe")
    assert err.value.exit_code == ExitCode.ENV_BROKEN
    assert "`import " in err.value.message and "stagewhisper setup" in err.value.message


def test_numpy_major_mismatch_is_named() -> None:
    with pytest.raises(StageError, match=r"numpy 2\.1\.0 but this stage needs numpy 1\.x"):
        envs._check_numpy("align_diarize", {"numpy": "2.1.0"})


def _require_real_env(stage: str) -> None:
    if not envs.env_python(stage).exists():
        pytest.skip(f"the {stage} environment is not synced: run `stagewhisper setup`")


def test_health_check_transcribe_has_numpy_2() -> None:
    _require_real_env("transcribe")
    versions = envs.health_check("transcribe")
    assert versions["numpy"].split(".")[0] == "2"
    assert {"mlx", "mlx-whisper", "stagewhisper"} <= versions.keys()


@pytest.mark.slow
def test_health_check_align_diarize_has_numpy_1() -> None:
    _require_real_env("align_diarize")
    versions = envs.health_check("align_diarize")
    assert versions["numpy"].split(".")[0] == "1"
    assert versions["whisperx"] == "3.3.1" and versions["pyannote.audio"] == "3.3.2"


@pytest.mark.slow
def test_real_setup_all_second_call_reuses_stamps(stage_envs: dict[str, Path]) -> None:
    mtimes = _stamp_mtimes()
    summaries = envs.setup_all(quiet=True)
    assert all(s.reused for s in summaries.values())
    assert _stamp_mtimes() == mtimes
    assert {stage: envs.ensure_ready(stage) for stage in envs.STAGES} == stage_envs


# ---------------------------------------------------------------- runtime


def test_stage_environment_sets_threads_and_preloads_openblas(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "libblas.so.3"
    openblas = tmp_path / "openblas-pthread" / "libblas.so.3"
    openblas.parent.mkdir()
    openblas.write_bytes(b"")
    base = {"LD_PRELOAD": "/opt/libjemalloc.so", "PYTHONPATH": "/elsewhere", "PATH": "/usr/bin"}

    env = runtime.stage_environment("transcribe", threads=3, base=base, system="Linux", blas_candidates=[missing, openblas])

    for key in THREAD_ENV_VARS:
        assert env[key] == "3"
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTORCH_ENABLE_MPS_FALLBACK"] == "1" and env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["LD_PRELOAD"] == f"{openblas}:/opt/libjemalloc.so"
    assert env["STAGEWHISPER_BLAS_CHOICE"] == f"openblas:{openblas}"
    assert env["OPENBLAS_THREAD_TIMEOUT"] == "4", "OpenBLAS's workers must not spin on the cores MLX and numpy need"
    assert "PYTHONPATH" not in env and env["PATH"] == "/usr/bin"
    assert base["LD_PRELOAD"] == "/opt/libjemalloc.so", "the base mapping must not be modified"
    assert runtime.blas_hint({}, system="Linux", candidates=[openblas]) is None


def test_stage_environment_without_openblas_uses_reference(tmp_path: Path) -> None:
    missing = [tmp_path / "libblas.so.3"]
    env = runtime.stage_environment("transcribe", base={}, system="Linux", blas_candidates=missing)
    assert "LD_PRELOAD" not in env
    assert env["STAGEWHISPER_BLAS_CHOICE"].startswith("reference (install libopenblas0-pthread")
    assert int(env["OMP_NUM_THREADS"]) == runtime.performance_cores() >= 1
    hint = runtime.blas_hint({}, system="Linux", candidates=missing) or ""
    assert "libopenblas0-pthread" in hint and "CTranslate2 backend does not need it" in hint  # bundled-tiny.en runs on CT2


def test_blas_choice_overrides_and_other_platforms(tmp_path: Path) -> None:
    lib = tmp_path / "libblas.so.3"
    lib.write_bytes(b"")

    def env(stage: str, system: str, **base: str) -> dict[str, str]:
        return runtime.stage_environment(stage, threads=1, base=base, system=system, blas_candidates=[lib])

    assert "LD_PRELOAD" not in env("transcribe", "Linux", STAGEWHISPER_BLAS="reference")
    assert env("transcribe", "Linux", STAGEWHISPER_BLAS=str(lib))["LD_PRELOAD"] == str(lib)
    assert env("transcribe", "Darwin")["STAGEWHISPER_BLAS_CHOICE"] == "accelerate"
    assert "LD_PRELOAD" not in env("transcribe", "Darwin")
    assert "LD_PRELOAD" not in env("align_diarize", "Linux"), "torch brings its own BLAS"
    assert runtime.blas_hint({}, system="Darwin", candidates=[]) is None
    with pytest.raises(StageError) as err:
        runtime.stage_environment("transcribe", base={"STAGEWHISPER_BLAS": "openblas"}, system="Linux", blas_candidates=[])
    assert err.value.exit_code == ExitCode.ENV_BROKEN
    with pytest.raises(StageError) as err:
        runtime.stage_environment("transcribe", threads=0, base={})
    assert err.value.exit_code == ExitCode.USAGE


def test_recorded_settings_never_hold_a_token() -> None:
    secret = "hf_" + "x" * 34
    base = {
        "HF_TOKEN": secret,
        "HUGGING_FACE_HUB_TOKEN": secret,
        "STAGEWHISPER_HF_TOKEN": secret,
        "STAGEWHISPER_NOTE": secret,
        "HOME": "/home/someone",
    }
    env = runtime.stage_environment("align_diarize", threads=2, base=base)
    assert env["HF_TOKEN"] == secret, "the stage itself still gets the token"

    recorded = recorded_settings(env)

    assert secret not in json.dumps(recorded)
    assert not any("TOKEN" in key and key != "TOKENIZERS_PARALLELISM" for key in recorded)
    assert "HOME" not in recorded
    assert recorded["OMP_NUM_THREADS"] == "2" and recorded["TOKENIZERS_PARALLELISM"] == "false"
    assert recorded["STAGEWHISPER_BLAS_CHOICE"] == "torch-bundled"


def test_real_transcribe_env_sees_runtime_settings(tmp_path: Path) -> None:
    """The settings reach a stage process (thread count) and OpenBLAS preloading doesn't break mlx."""
    _require_real_env("transcribe")
    env = runtime.stage_environment("transcribe", threads=2)
    code = "import os, mlx.core as mx; x = mx.ones((4, 4)); print(os.environ['OMP_NUM_THREADS'], (x @ x).sum().item())"
    out = subprocess.run(
        [str(envs.env_python("transcribe")), "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["2", "64.0"]


def test_openblas_kernels_are_named_only_when_it_fell_back_to_generic_ones(tmp_path: Path) -> None:
    avx512 = frozenset({"fma", "avx2", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "amx_int8"})
    assert runtime.openblas_coretype("Prescott", avx512) == "SkylakeX"
    assert runtime.openblas_coretype("Prescott", frozenset({"avx2", "fma", "sse3"})) == "Haswell"
    assert runtime.openblas_coretype("Prescott", frozenset({"sse3"})) is None, "no better kernels: leave it"
    assert runtime.openblas_coretype("Zen", avx512) is None, "a CPU it knows keeps its own tuning"
    assert runtime.openblas_coretype(None, avx512) is None, "not OpenBLAS (or not loadable): no override"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse3 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert runtime.cpu_flags(cpuinfo) == frozenset({"fpu", "sse3", "avx2", "fma"})
    assert runtime.cpu_flags(tmp_path / "missing") == frozenset()
    assert runtime.openblas_core(tmp_path / "missing.so") is None


def test_the_real_openblas_reports_its_kernels_and_the_user_choice_wins() -> None:
    library = runtime.find_openblas()
    if library is None:
        pytest.skip("no system OpenBLAS here")
    detected = runtime.openblas_core(library)
    assert detected, "Debian's libblas.so.3 from openblas-pthread is OpenBLAS: it names its kernels"
    env = runtime.stage_environment("transcribe", threads=1, base={}, system="Linux", blas_candidates=[library])
    forced = runtime.openblas_coretype(detected, runtime.cpu_flags())
    assert env.get("OPENBLAS_CORETYPE") == forced
    assert (forced is not None) == ("kernels" in env["STAGEWHISPER_BLAS_CHOICE"])
    base = {"OPENBLAS_CORETYPE": "Haswell"}
    mine = runtime.stage_environment("transcribe", threads=1, base=base, system="Linux", blas_candidates=[library])
    assert mine["OPENBLAS_CORETYPE"] == "Haswell"
    patient = runtime.stage_environment(
        "transcribe", threads=1, base={"OPENBLAS_THREAD_TIMEOUT": "20"}, system="Linux", blas_candidates=[library]
    )
    assert patient["OPENBLAS_THREAD_TIMEOUT"] == "20"
