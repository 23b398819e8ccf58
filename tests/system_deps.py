"""Whether the tests that need Debian packages (Slurm, Chromium) run, skip or fail, by one rule for both.

`make test` first runs tests/install-deps.sh, which installs the missing packages where it can (root and apt-get)
and otherwise prints one line saying which tests skip. The tests follow the same rule: programs there -> run;
left out by CYCLESEG_NO_<GROUP>=1 -> skip; missing where they cannot be installed -> skip, saying how to run
them; missing where they could have been (root and apt-get: `pytest` started without `make test`) -> fail,
naming `make test-deps`, so that CI never passes by skipping them.
"""

from __future__ import annotations

import os
import shutil

import pytest

SBIN = "/usr/sbin:/sbin"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def which(program: str) -> str | None:
    return shutil.which(program, path=f"{os.environ.get('PATH', '')}:{SBIN}")


def cannot_install() -> str | None:
    """Why tests/install-deps.sh cannot install packages here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if which("apt-get") is None:
        return "no apt-get on this machine"
    return None


def decide(group: str, what: str, missing: list[str], packages: str) -> tuple[str, str] | None:
    """("skip" | "fail", reason) for `what` (e.g. "the browser tests") whose programs `missing` are absent;
    None when nothing is missing."""
    if os.environ.get(f"CYCLESEG_NO_{group.upper()}", "0") not in ("", "0"):
        return "skip", f"CYCLESEG_NO_{group.upper()} is set: {what} are left out"
    if not missing:
        return None
    why = cannot_install()
    if why:
        return "skip", (f"{what} skipped: {', '.join(missing)} not installed and {why}; to run them, on "
                        f"Debian/Ubuntu as root: make test-deps (apt-get install {packages})")
    return "fail", (f"{', '.join(missing)} not installed: run `make test-deps` (apt-get install {packages}), or "
                    f"set CYCLESEG_NO_{group.upper()}=1 to leave {what} out")


def chromium() -> str:
    """The path of a headless-capable Chromium; skips or fails the calling test by `decide`'s rule."""
    found = next((which(b) for b in BROWSERS if which(b)), None)
    verdict = decide("browser", "the browser tests", [] if found else ["chromium"], "chromium fonts-dejavu-core")
    if verdict:
        (pytest.skip if verdict[0] == "skip" else pytest.fail)(verdict[1])
    return found


def chromium_command(profile: os.PathLike) -> list[str]:
    """Chromium headless with nothing that reaches the network, and a fresh profile folder."""
    return [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}"]
