"""docs/extending.md works as written: every Python block of each section runs in order
(the registries it extends are restored afterwards), and the API reference builds."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def sections() -> dict[str, list[str]]:
    """Python blocks of each '## ' section of docs/extending.md, in order."""
    out: dict[str, list[str]] = {}
    for part in re.split(r"^## ", DOC.read_text(), flags=re.M)[1:]:
        title = part.splitlines()[0].strip()
        blocks = re.findall(r"```python\n(.*?)```", part, re.S)
        if blocks:
            out[title] = blocks
    return out


@pytest.fixture
def registries():
    """Snapshots of the registries the examples add to, restored after the test."""
    from dynvae.gp.kernels import KERNELS
    from dynvae.models.latent_sde import SOLVERS
    from dynvae.models.registry import MODELS
    from dynvae.nn.encoders import ENCODERS
    saved = [(r, dict(r)) for r in (KERNELS, SOLVERS, MODELS, ENCODERS)]
    yield
    for registry, copy in saved:
        registry.clear()
        registry.update(copy)


def test_every_part_has_an_example():
    assert set(sections()) == {"A kernel", "An encoder (Deep Kalman Filter)",
                               "A solver (SDEs)", "A model"}


@pytest.mark.parametrize("title", ["A kernel", "An encoder (Deep Kalman Filter)",
                                   "A solver (SDEs)"])
def test_section_runs(title, registries):
    namespace: dict = {"__name__": f"extending_{len(title)}"}
    for block in sections()[title]:
        exec(compile(block, f"{DOC.name}: {title}", "exec"), namespace)    # noqa: S102


def test_model_section_runs_from_the_command_line(tmp_path, monkeypatch, registries):
    pytest.importorskip("scipy")
    blocks = sections()["A model"]
    module, rest = blocks[0], blocks[1:]
    assert module.startswith("# ar1.py")
    (tmp_path / "ar1.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "extending_model"}
    try:
        for block in rest:
            exec(compile(block, f"{DOC.name}: A model", "exec"), namespace)  # noqa: S102
    finally:
        sys.modules.pop("ar1", None)
    assert (tmp_path / "runs" / "ar1" / "metrics.json").is_file()


def test_the_model_example_passes_the_contract_suite(tmp_path):
    """The model of the 'A model' section, registered as its step 3 says (MODELS,
    SMALL_CONFIGS, KL_NOT_SPLIT; here by a pytest plugin rather than by editing the
    files), passes every check of tests/models/test_contract.py."""
    import subprocess
    (tmp_path / "ar1.py").write_text(sections()["A model"][0])
    (tmp_path / "register_ar1.py").write_text(
        "from dynvae.models.registry import MODELS\n"
        "from tests.models.contract_configs import SMALL_CONFIGS\n"
        "MODELS['ar1'] = 'ar1:AR1'\n"
        "SMALL_CONFIGS['ar1'] = {}\n"
        "def pytest_collection_modifyitems(items):\n"
        "    from tests.models import test_contract\n"
        "    test_contract.KL_NOT_SPLIT['ar1'] = 'no latent variables: no KL term'\n")
    root = DOC.parents[1]
    env = {**__import__("os").environ,
           "PYTHONPATH": f"{tmp_path}{__import__('os').pathsep}{root}"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "register_ar1", "-p", "no:cacheprovider",
         "-p", "no:xdist", "tests/models/test_contract.py", "-k", "ar1"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert done.returncode == 0 and passed and int(passed[1]) >= 15, done.stdout[-3000:]


@pytest.mark.filterwarnings("ignore:Error parsing type annotation:UserWarning")
def test_api_reference_builds(tmp_path):
    """docs/build_api.py renders a page for every module of the package."""
    pytest.importorskip("pdoc")
    spec = importlib.util.spec_from_file_location("build_api", DOC.parent / "build_api.py")
    build_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_api)
    names = build_api.build(tmp_path)
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
    assert len(names) > 50
    for name in names:
        assert name.replace(".", "/") + ".html" in pages, name
    text = (tmp_path / "dynvae" / "gp" / "regression.html").read_text()
    assert "StateSpaceGP" in text and "log_marginal_likelihood" in text
