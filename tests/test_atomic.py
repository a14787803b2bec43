"""mixkit.atomic: a killed writer's temporaries are removed by the next write of the same target, and only
those (a running writer's, and entries not named by mixkit, are left alone)."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from mixkit.atomic import remove_stale_temporaries, temp_dir_beside, write_json_atomic

REPO = Path(__file__).resolve().parents[1]


def _killed_writer(target: Path, kind: str) -> list[Path]:
    """Runs a process that opens a temporary beside ``target`` and is SIGKILLed inside the block."""
    code = textwrap.dedent(f"""
        import os, signal
        from mixkit.atomic import temp_dir_beside, temp_file_beside
        opener = temp_{kind}_beside
        with opener({str(target)!r}) as tmp:
            if {kind!r} == "file":
                tmp.write_bytes(b"x" * 1000)
            else:
                (tmp / "shard-000000.tar").write_bytes(b"x" * 1000)
            print(tmp, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [Path(line) for line in proc.stdout.split()]
    assert left and all(p.exists() for p in left)
    return left


def test_the_next_write_removes_a_killed_writers_file(tmp_path):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"old": 1})
    (left,) = _killed_writer(target, "file")
    prefix = f".summary.json.tmp-{socket.gethostname()}-"
    assert left.name.startswith(prefix) and left.name[len(prefix):].split("-")[0] != str(os.getpid())
    mine = tmp_path / ".summary.json.tmp-notes"  # not named by mixkit.atomic: kept
    mine.write_text("keep")
    with pytest.warns(RuntimeWarning, match=r"removed 1 temporary entry beside .*summary.json left by a killed writer"):
        write_json_atomic(target, {"new": 2})
    assert not left.exists() and mine.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".summary.json.tmp-notes", "summary.json"]


def test_a_killed_writers_directory_goes_and_a_running_writers_stays(tmp_path):
    target = tmp_path / "wds"
    (left,) = _killed_writer(target, "dir")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".wds.tmp-{socket.gethostname()}-{sleeper.pid}-abcd"
        live.mkdir()
        with pytest.warns(RuntimeWarning, match="removed 1 temporary entry"):
            with temp_dir_beside(target) as tmp:
                assert tmp.is_dir() and tmp.name.startswith(f".wds.tmp-{socket.gethostname()}-{os.getpid()}-")
        assert not left.exists() and live.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.warns(RuntimeWarning, match="removed 1 temporary entry"):  # now its writer is gone too
        assert remove_stale_temporaries(target) == [live]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert remove_stale_temporaries(target) == [] and remove_stale_temporaries(tmp_path / "missing" / "x") == []
