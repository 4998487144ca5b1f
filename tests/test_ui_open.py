"""``gotstate-persist ui --open``: the browser is started without the token on its command line.

Any local user can read a process's command line, so the browser opens a
file only this user can read (mode 0600) that forwards to the URL with the
token. A stand-in browser (``$BROWSER``, which the standard ``webbrowser``
module runs) records what it was given.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _ui_store import populate

#: How long the stand-in browser may take to be started (a wait, not a timing assertion).
_WAIT_S = 60


def test_open_passes_the_browser_a_private_file_not_the_token(tmp_path: Path) -> None:
    stored = populate(tmp_path)
    record = tmp_path / "browser-saw.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(
        "#!/bin/sh\n"
        'file="${1#file://}"\n'
        f'{{ echo "$@"; stat -c %a "$file"; cat "$file"; }} > "{record}.part"\n'
        f'mv "{record}.part" "{record}"\n',
        encoding="utf-8",
    )
    browser.chmod(0o700)
    env = {**os.environ, "BROWSER": f"{browser} %s"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gotstate_persist.cli", "ui", stored.url, "--port", "0", "--open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        token = url.split("token=", 1)[1]
        deadline = time.monotonic() + _WAIT_S
        while not record.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        argv, mode, page = record.read_text(encoding="utf-8").split("\n", 2)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert token not in argv
    assert argv.startswith("file://")
    assert mode == "600"
    assert url.replace("&", "&amp;") in page or url in page
    launcher = Path(argv.removeprefix("file://"))
    assert not launcher.exists()  # removed when the server stopped
