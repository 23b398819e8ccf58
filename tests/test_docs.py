"""The documentation: the README stays short, every section of the old README lives on in the site, the site
builds with --strict and renders in a browser, the guide's runnable examples run, and every subcommand's
--help ends with examples that parse."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cycleseg.cli import SUBCOMMAND_EXAMPLES, build_parser
from system_deps import chromium_command

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent

# Every heading of the README as it was before the site (git show 189f5cd:README.md), frozen, and the page and
# heading of the site that now hold its text. A new README heading needs no entry: this list is the old one.
OLD_README_HEADINGS = {
    "# cycleseg": ("index.md", "# cycleseg"),
    "## Quick start": ("getting-started.md", "## Three minutes on a CPU"),
    "## Using it": ("guide/train-evaluate.md", "# Train and evaluate"),
    "## Semi-supervised training": ("guide/semi-supervised-training.md", "# Semi-supervised training"),
    "## Your own dataset, your own photos": ("guide/own-data.md", "# Your own dataset and photos"),
    "## Every experiment of the paper: sweep, calibrate, report": ("guide/sweep-report.md",
                                                                   "# The paper's sweep and report"),
    "### The paper's sweep on one 8-GPU machine": ("guide/slurm-multi-gpu.md",
                                                   "## The paper's sweep on one 8-GPU machine"),
    "### Sweeps on a Slurm cluster": ("guide/slurm-multi-gpu.md", "## Sweeps on a Slurm cluster"),
    "## Performance and multi-GPU training": ("guide/performance.md", "# Performance"),
    "## Deploying G: ONNX": ("guide/own-data.md", "## Deploying G: ONNX"),
    "## Diagnostics: the watermarks": ("guide/diagnostics.md", "# Diagnostics: the watermarks"),
    "## Two studies on a 2-core CPU: the watermark, and semi-supervised training": ("studies.md", "# Studies"),
    "## Reliability: resume after any crash": ("guide/reliability.md", "## Resume after any crash"),
    "## Real Cityscapes": ("guide/cityscapes.md", "# Real Cityscapes"),
    "## What is implemented, and where the SPEC fixes the paper": ("paper-mapping.md",
                                                                  "## Where the SPEC fixes the paper"),
    "## Code layout": ("architecture.md", "## Code layout"),
    "## Dependencies, and why": ("architecture.md", "## Dependencies, and why"),
    "## Tests": ("architecture.md", "## Tests"),
}
# Paragraphs of the old README that led with a bold title, and where they went.
OLD_README_PARAGRAPHS = {
    "**Configuration.**": ("guide/train-evaluate.md", "## Configuration"),
    "**A run directory**": ("guide/train-evaluate.md", "## The run directory"),
    "**Training comforts**": ("guide/train-evaluate.md", "## Training comforts"),
    "**Evaluation**": ("guide/train-evaluate.md", "## Evaluation"),
    "**Data.**": ("guide/cityscapes.md", "## The Cityscapes layout"),
    "**Several GPUs or machines**": ("guide/slurm-multi-gpu.md", "## Several GPUs or machines: torchrun"),
    "**Inference**": ("guide/performance.md", "## Inference"),
    "**Data loading speed**": ("guide/performance.md", "## Data loading speed"),
    "**Statistics over seeds, and how to read them**": ("guide/sweep-report.md",
                                                        "## Statistics over seeds, and how to read them"),
    "**Resume rules**": ("guide/reliability.md", "## Resume rules"),
}

RUNNABLE = 'title="runnable example"'
# What tests/test_docs.py puts in front of `cycleseg` (docs/getting-started.md, "The examples in this guide").
SHRINK = r"""
cycleseg() {
  case "$1" in
    make-synthetic) command cycleseg "$@" --train 6 --val 3 --size 64x32 ;;
    train) if [[ " $* " == *" --resume "* ]]; then command cycleseg "$@" train.max_iters=2
           else command cycleseg "$@" data.height=32 data.width=64 train.max_iters=2; fi ;;
    sweep) if [ "$2" = status ]; then command cycleseg "$@"
           else command cycleseg "$@" data.height=32 data.width=64 train.max_iters=2; fi ;;
    *) command cycleseg "$@" ;;
  esac
}
"""


def _headings(text: str) -> list[str]:
    """Markdown headings outside fenced code."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            out.append(line.strip())
    return out


def _nav_pages() -> list[str]:
    """The Markdown files of mkdocs.yml's nav, in order."""
    def walk(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return list(walk(config["nav"]))


def _runnable_blocks() -> list[tuple[str, str]]:
    """(page, shell text) of every block titled "runnable example", in nav order."""
    blocks = []
    for page in _nav_pages():
        text = (DOCS / page).read_text()
        for match in re.finditer(r"^```bash ([^\n]*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
            if RUNNABLE in match.group(1):
                blocks.append((page, match.group(2)))
    return blocks


def _commands(shell: str) -> list[list[str]]:
    """The `cycleseg ...` commands of a block, continuation lines joined, comments dropped."""
    joined = shell.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip().startswith("cycleseg")]


def _parses(argv: list[str]) -> None:
    """Parse argv as `cycleseg` does (sweep status rewrite, KEY=VALUE after options); raises SystemExit if not."""
    if argv[:2] == ["sweep", "status"]:
        argv = ["sweep-status", *argv[2:]]
    args, extra = build_parser().parse_known_args(argv)
    assert all("=" in e and not e.startswith("-") for e in extra), (argv, extra)
    assert args.command


def test_readme_is_short_and_keeps_the_quick_start():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024, len(readme.encode())
    assert "make demo   #" in readme and "make test   #" in readme  # .ci/run calls `make test`
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for link in re.findall(r"\]\(((?:docs/)[^)#]+)", readme):
        assert (ROOT / link).is_file(), f"README links {link}, which does not exist"


def test_every_old_readme_section_lives_on_in_a_page_of_the_site():
    nav = _nav_pages()
    for old, (page, heading) in {**OLD_README_HEADINGS, **OLD_README_PARAGRAPHS}.items():
        assert page in nav, f"{page} (holding the old README's {old!r}) is not in mkdocs.yml's nav"
        assert heading in _headings((DOCS / page).read_text()), f"{page} lost {heading!r} (the old {old!r})"


def test_the_frozen_heading_list_is_the_old_readme():
    old = subprocess.run(["git", "show", "189f5cd:README.md"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    if old.returncode != 0:  # a shallow clone or an archive without history
        pytest.skip("git history with commit 189f5cd is not available")
    assert _headings(old.stdout) == list(OLD_README_HEADINGS)


def test_every_nav_page_exists_and_no_page_is_left_out():
    nav = set(_nav_pages())
    assert all((DOCS / page).is_file() for page in nav)
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_incoming" not in p.parts}
    assert pages == nav, pages ^ nav


def test_every_subcommand_help_ends_with_examples_that_parse():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subcommands) == set(SUBCOMMAND_EXAMPLES)
    for name, sub in subcommands.items():
        text = sub.format_help().rstrip()
        examples = SUBCOMMAND_EXAMPLES[name]
        assert 1 <= len(examples) <= 3
        tail = text[text.rindex("\nexamples:\n"):]
        assert tail.splitlines()[-1].strip() == examples[-1].splitlines()[-1].strip(), name
        for example in examples:
            argv = shlex.split(example.replace("\\\n", " "))
            assert argv[0] == "cycleseg" and argv[1] == (name if name != "sweep-status" else "sweep"), example
            _parses(argv[1:])


def test_runnable_examples_are_there_and_parse():
    blocks = _runnable_blocks()
    pages = {page for page, _ in blocks}
    assert {"guide/train-evaluate.md", "guide/sweep-report.md", "guide/own-data.md", "guide/diagnostics.md",
            "guide/reliability.md", "guide/cityscapes.md"} <= pages
    for page, shell in blocks:
        commands = _commands(shell)
        assert commands and len(commands) == len([ln for ln in shell.replace("\\\n", " ").splitlines()
                                                  if ln.strip()]), (page, shell)
        for argv in commands:
            _parses(argv[1:])


@pytest.mark.slow  # about 50 s: every runnable example of the guide, on tiny data
def test_runnable_examples_run(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    script = ["set -euo pipefail", SHRINK]
    for page, shell in _runnable_blocks():
        script += [f"echo '=== {page}'", shell]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "runs" / "q2" / "eval_val.json").is_file()
    assert (tmp_path / "runs" / "sweep" / "quant2" / "eval_val.json").is_file()
    assert (tmp_path / "segmented" / "overlay").is_dir()


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """The site built with --strict into a temporary folder."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return site


@pytest.mark.slow  # mkdocs build: a few seconds
def test_site_builds_strict_without_the_incoming_folder(built_site):
    assert (built_site / "index.html").is_file()
    assert (built_site / "guide" / "train-evaluate" / "index.html").is_file()
    assert not (built_site / "_incoming").exists()
    api = (built_site / "reference" / "core" / "index.html").read_text()
    assert "NoiseInjection" in api and "segmentation_loss" in api  # generated from the docstrings


@pytest.mark.slow  # headless Chromium: a few seconds per page
@pytest.mark.parametrize("page, title", [("index.html", "cycleseg"),
                                         ("guide/train-evaluate/index.html", "Train and evaluate")])
def test_built_pages_render_in_a_headless_browser(built_site, tmp_path, page, title):
    browser = chromium_command(tmp_path / "profile")  # skips where Chromium cannot be installed (system_deps)
    url = (built_site / page).as_uri()
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert re.search(rf"<h1[^>]*>{re.escape(title)}", dom.stdout), dom.stdout[:2000]
    assert 'class="md-header' in dom.stdout  # the Material theme, not a bare or error page
    shot = tmp_path / (page.replace("/", "_") + ".png")
    result = subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars", url],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (900, 1280)
    assert pixels.std() > 20  # not blank: text, header bar, images
    assert (pixels < 80).mean() > 0.002  # dark text drawn
    keep = os.environ.get("CYCLESEG_SCREENSHOTS")  # a folder to keep the screenshots in, to look at them
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep)
