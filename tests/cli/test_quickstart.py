"""The README's quick start runs top to bottom in an empty folder, as written.

The block is read from README.md. The slow test runs every command verbatim in a
subprocess. The fast one runs the same commands in-process with smaller budgets and
data (``shrink``: training budgets of a few seconds, a few EM and GP iterations, the
built-in datasets cut to a few sequences), so the order, options and files of the block are
checked on every run of the suite.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dynvae.cli import main

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("statsmodels")
pytest.importorskip("sklearn")
pytest.importorskip("music21")

# a size option of each built-in dataset with many sequences, for the fast variant
SMALL_DATA = {"healing-digits": "n_sequences=40", "chorales": "max_pieces=6",
              "stochastic-lorenz": "n=24"}


def quickstart_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The commands of the first bash block under '## Quick start (CLI)', each an argv
    list without the leading ``dynvae`` (continuation lines joined, comments dropped)."""
    text = readme.read_text()
    section = text[text.index("## Quick start (CLI)"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            assert argv[0] == "dynvae", line
            commands.append(argv[1:])
    return commands


def written_files(argv: list[str]) -> list[str]:
    """The files and run directories a command names for writing."""
    out = [argv[i + 1] for i, a in enumerate(argv) if a in ("--out", "--plot")]
    if argv[:2] == ["datasets", "export"]:
        out.append(argv[3])
    return out


def shrink(argv: list[str]) -> list[str]:
    """The same command with a short budget and small data."""
    argv = [re.sub(r"^max_seconds=.*", "max_seconds=2", a) for a in argv]
    if argv[:3] == ["train", "--model", "lgssm"]:
        argv += ["--set", "max_iter=5"]
    if argv[0] == "train" and "--dataset" in argv:
        name = argv[argv.index("--dataset") + 1]
        if name in SMALL_DATA:
            argv += ["--dataset-option", SMALL_DATA[name]]
        if not any(a.startswith("max_seconds=") for a in argv):
            argv += ["--set", "max_steps=3"]
    if argv[0] == "gp":
        argv += ["--max-iter", "3", "--grid-points", "200"]
    return argv


def readme_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """Every ``dynvae`` command of every bash block of README.md (after any VAR=value)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                while argv and re.match(r"^[A-Z_]+=", argv[0]):
                    argv = argv[1:]
                if argv and argv[0] == "dynvae":
                    commands.append(argv[1:])
    return commands


@pytest.mark.parametrize("doc", ["README.md", "docs/models.md", "docs/cli.md"])
def test_every_documented_command_parses_and_its_set_keys_exist(doc):
    from dynvae.cli import build_parser
    from dynvae.commands import common
    from dynvae.commands.train import fit_sections
    from dynvae.models.registry import model_class
    commands = readme_commands(ROOT / doc)
    if doc == "README.md":
        assert len(commands) > len(quickstart_commands())
    for argv in commands:
        args = build_parser(argv).parse_args(argv)
        if argv[0] == "train":
            common.resolve_configs(args.set, fit_sections(model_class(args.model)))


def test_the_block_is_found_and_writes_only_under_runs():
    commands = quickstart_commands()
    assert len(commands) >= 10 and commands[0] == ["datasets"]
    for argv in commands:
        for path in written_files(argv):
            assert path.startswith("runs/"), (argv, path)


def test_quickstart_runs_in_order_with_small_budgets(tmp_path, tmp_path_factory, monkeypatch,
                                                     capsys, request):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DYNVAE_CACHE", str(tmp_path_factory.mktemp("cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # small models: one thread is the fastest
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    for argv in quickstart_commands():
        small = shrink(argv)
        assert main(small) == 0, (small, capsys.readouterr().err[-2000:])
        for path in written_files(argv):
            assert (tmp_path / path).exists(), (argv, path)
    assert (tmp_path / "runs" / "dkf" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_quickstart_runs_verbatim(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), MPLBACKEND="Agg",
               OMP_NUM_THREADS="1")
    for argv in quickstart_commands():
        proc = subprocess.run([sys.executable, "-m", "dynvae", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, (argv, proc.stderr[-3000:])
        for path in written_files(argv):
            assert (tmp_path / path).exists(), (argv, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
