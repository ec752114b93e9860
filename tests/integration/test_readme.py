"""The README's command blocks, run as written, so README and code cannot drift apart (issue 17).

Every ```bash block runs, in order, in one bash process, in a fresh folder with a fresh registry and
LFW where the README says it is (``../shared/datasets``). What the harness changes, and why:

- each ``tandem train`` line gets options appended that make it tiny (for a repeated option the last
  value wins), so the README's own options are all parsed and used;
- each ``tandem export`` line without ``--formats`` gets ``--formats onnx``: the LiteRT, ExecuTorch and
  Core ML conversions take a minute or two more, and tests/integration/test_variant_export.py covers them;
- ``make`` lines are not run: tests/integration/test_makefile.py and test_demo.py cover them;
- ``tandem serve`` runs in the background on a free port (the README runs it in its own terminal on
  8000), and the next line waits until it is ready;
- ``curl`` fails on an HTTP error (``--fail-with-body``), as the README's reader would notice one;
- a line that fails stops the run and names itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.testing.processes import free_port
from tests.conftest import REPO, make_folder_dataset

pytestmark = pytest.mark.integration
README = REPO / "README.md"

# Appended to each kind of `tandem train` line (the README's full runs take minutes to an hour).
TINY = {
    "stylize": "--epochs 1 --max-images 12 --photo-size 64 --crop 32 --no-progress",
    "embed": "--epochs 1 --max-images 64 --no-progress",
    "classify": "--epochs 1 --subset 0.05 --no-progress",
}
README_PORT = "8000"
PRELUDE = """\
set -uo pipefail
curl() { command curl --fail-with-body --silent --show-error --max-time 120 "$@"; }
readme_failed() { echo "README.md line $1 failed: $2" >&2; exit 1; }
wait_ready() {
  for _ in $(seq 900); do command curl -sf "localhost:$1/v2/health/ready" >/dev/null && return 0; sleep 0.2; done
  echo "tandem serve never became ready on port $1" >&2; return 1
}
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
"""


def bash_blocks(text: str) -> list[tuple[int, str]]:
    """Each ```bash block's logical lines (backslash continuations joined), with the README line each starts on."""
    lines, out, inside, pending, start = text.splitlines(), [], False, "", 0
    for number, line in enumerate(lines, 1):
        if not inside:
            inside = line.strip() == "```bash"
            continue
        if line.strip() == "```":
            inside = False
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def without_comment(line: str) -> str:
    """The command part of a shell line: up to a '#' that starts a word outside quotes."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def runnable(line: str, port: int) -> str | None:
    """The line as the harness runs it (None: not run here, see the module's docstring)."""
    command = without_comment(line).replace(f":{README_PORT}", f":{port}").replace(f"--port {README_PORT}", f"--port {port}")
    if not command or command.startswith("make "):
        return None
    words = command.split()
    if words[:2] == ["tandem", "train"]:
        kind = "stylize" if "stylize" in words else "embed" if "embed" in words else "classify"
        return f"{command} {TINY[kind]}"
    if words[:2] == ["tandem", "export"] and "--formats" not in words:
        return f"{command} --formats onnx"
    if words[:2] == ["tandem", "serve"]:
        return f"{command} &\nwait_ready {port}"
    return command


def script(text: str, port: int) -> str:
    parts = [PRELUDE]
    for number, line in bash_blocks(text):
        command = runnable(line, port)
        if command is not None:
            parts.append(f"{{ {command}\n}} || readme_failed {number} {json.dumps(line.strip())}")
    return "\n".join(parts) + "\n"


def test_the_harness_reads_blocks_comments_and_continuations():
    text = "intro\n```bash\nmake demo   # sets up\ntandem serve --port 8000  # ready\n" \
           "curl -d @a \\\n     localhost:8000/x  # two lines\necho \"a#b\" # c\n```\n```\nnot bash\n```\n"
    assert bash_blocks(text) == [(3, "make demo   # sets up"), (4, "tandem serve --port 8000  # ready"),
                                 (5, "curl -d @a       localhost:8000/x  # two lines"), (7, 'echo "a#b" # c')]
    assert runnable("make demo   # sets up", 9) is None
    assert runnable("tandem serve --port 8000  # ready", 9) == "tandem serve --port 9 &\nwait_ready 9"
    assert runnable('echo "http://localhost:8000/app/#device=$K" # open', 9) == 'echo "http://localhost:9/app/#device=$K"'
    assert runnable("tandem train --data lfw --objective embed --epochs 2 --out r  # x", 9) == \
        f"tandem train --data lfw --objective embed --epochs 2 --out r {TINY['embed']}"
    assert runnable("tandem export r --out b  # all", 9) == "tandem export r --out b --formats onnx"
    assert runnable("tandem export r --out b --formats litert", 9) == "tandem export r --out b --formats litert"


def test_the_readme_runs_as_written(tmp_path, data_home, lfw_people):
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "datasets").symlink_to(data_home)  # where the README says LFW is: ../shared/datasets
    people = ["Tony_Blair", "Hugo_Chavez", "Gerhard_Schroeder"]
    make_folder_dataset(work / "my_celebrities", lfw_people, people, 3)
    (work / "friends").mkdir()
    for i, name in enumerate(people[:2]):
        shutil.copy(sorted((lfw_people / name).glob("*.jpg"))[5], work / "friends" / f"friend{i}.jpg")
    shutil.copy(sorted((lfw_people / "Tony_Blair").glob("*.jpg"))[6], work / "me.jpg")
    shutil.copy(sorted((lfw_people / "Hugo_Chavez").glob("*.jpg"))[6], work / "photo.jpg")
    (work / "readme.sh").write_text(script(README.read_text("utf-8"), free_port()))

    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}  # only what the README sets
    env.update(TANDEM_HOME=str(tmp_path / "home"), COLUMNS="200",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    # Its own process group: on a timeout the README's `tandem serve` (in the background) goes with the script.
    proc = subprocess.Popen(["bash", "readme.sh"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the README's commands ran past 900 s\n{stderr[-4000:]}\n--- stdout ---\n{stdout[-3000:]}")
    assert proc.returncode == 0, f"{stderr[-4000:]}\n--- stdout ---\n{stdout[-3000:]}"

    assert (work / "art.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the deep-art curl's answer
    assert re.search(r'"label":\s*"Tony_Blair"', stdout)  # the celebmatch curl: enrolled people, found
    assert "http://localhost:" in stdout and "#device=" in stdout  # the browser link, keys filled in
    models = json.loads(subprocess.run(["tandem", "models", "--json"], cwd=work, env=env, capture_output=True,
                                       text=True, check=True).stdout)
    assert {m["name"]: m["aliases"] for m in models} == {
        name: {"production": 1} for name in ("faces", "celebmatch", "deepart-stylization")}
