"""The documentation stays true: links resolve, the options reference matches the parsers, the README
keeps its set-up commands first, and the Python API examples run."""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.common import reference

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
SETUP_COMMANDS = [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m jobs.stylize",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -q -n 2 --dist loadfile",
]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "cluster" / "README.md", *sorted(DOCS.rglob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks and inline code, where links and headings live."""
    text = FENCE.sub("", text)
    return re.sub(r"(`+).*?\1", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", path.read_text()), re.M):
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for target in LINK.findall(prose(path.read_text())):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, mailto:, ...: not ours to check
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(root)}: {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{path.relative_to(root)}: {target}: no heading #{anchor} in {dest.relative_to(root)}")
    return problems


def test_relative_links_and_anchors_resolve() -> None:
    files = markdown_files()
    assert len(files) > 10, files  # the docs/ pages are there
    problems = [p for path in files for p in broken_links(path)]
    assert not problems, "\n".join(problems)


def test_link_check_catches_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("# Real heading\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#real-heading) [gone](c.md) ![img](missing.png) [bad](b.md#nope) "
                    "[web](https://example.com) `[code](nowhere.md)`\n")
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ")[1] for p in problems] == ["c.md", "missing.png", "b.md#nope"]


def test_options_reference_is_regenerated() -> None:
    written = (DOCS / "reference" / "options.md").read_text()
    fresh = reference.render()
    if written != fresh:
        diff = "\n".join(list(difflib.unified_diff(written.splitlines(), fresh.splitlines(), "written", "fresh",
                                                   lineterm=""))[:40])
        pytest.fail("docs/reference/options.md does not match the commands' options; regenerate it with\n"
                    "    python -m jobs.common.reference > docs/reference/options.md\n" + diff)


@pytest.mark.parametrize("command,target", [(c, t) for c, _, t in reference.COMMANDS])
def test_help_never_prints_pydantic_undefined(command: str, target: str) -> None:
    text = reference.load_parser(target).format_help()  # what --help prints
    assert "PydanticUndefined" not in text, command
    assert "--help" in text


def test_required_options_say_so() -> None:
    text = reference.load_parser("jobs.image.settings:build_parser").format_help()
    assert "input image files (paths or URIs) (required)" in " ".join(text.split())


def test_readme_is_short_and_starts_with_the_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 260
    blocks = [b.strip("\n") for b in FENCE.findall(text)]
    assert blocks[:2] == SETUP_COMMANDS  # CI and new users run these, byte for byte


def _python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def test_python_api_page_shows_lines_of_the_example_files() -> None:
    blocks = _python_blocks(DOCS / "python-api.md")
    files = [EXAMPLES / "stylize_numpy.py", EXAMPLES / "run_batch_job.py"]
    assert len(blocks) == len(files)
    for block, file in zip(blocks, files):
        lines = {line.rstrip() for line in file.read_text().splitlines()}
        missing = [line for line in block.splitlines() if line.strip() and line.rstrip() not in lines]
        assert not missing, f"docs/python-api.md shows lines that {file.name} does not have: {missing}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_stylize_numpy_example_writes_a_styled_image(tmp_path: Path) -> None:
    import skimage.data

    from stylize_core.image_io import resize_max_side

    out = tmp_path / "styled.jpg"
    proc = subprocess.run([sys.executable, str(EXAMPLES / "stylize_numpy.py"), str(out)], cwd=tmp_path,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    styled = np.asarray(Image.open(out).convert("RGB")).astype(np.float64)
    original = resize_max_side(skimage.data.astronaut(), 256).astype(np.float64)
    assert styled.shape == original.shape
    assert np.abs(styled - original).mean() > 10  # restyled, not copied
    assert styled.std() > 20 and np.percentile(styled, 99) - np.percentile(styled, 1) > 100  # not flat


def test_batch_job_example_compiles_and_its_imports_exist() -> None:
    # Running it starts Ray (half a minute): the suite checks that it compiles and that every name it
    # imports exists, so a renamed API breaks this test rather than the users' copy.
    source = (EXAMPLES / "run_batch_job.py").read_text()
    tree = ast.parse(compile(source, "run_batch_job.py", "exec", ast.PyCF_ONLY_AST))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                submodule = hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{alias.name}")
                assert hasattr(module, alias.name) or submodule, f"{node.module}.{alias.name} does not exist"


def test_readmes_console_scripts_are_installed_and_run() -> None:
    """README's console scripts: each is installed (the package's entry points) and names a callable
    ``entry``; one runs from the environment's bin directory as a user would type it."""
    from importlib.metadata import entry_points

    text = (ROOT / "README.md").read_text()
    named = re.search(r"Console scripts are installed for the main\nones: (.*)\.", text).group(1)
    names = re.findall(r"`([a-z-]+)`", named)
    assert names == ["stylize", "stylize-image", "stylize-catalog", "stylize-video", "stylize-train"]
    installed = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in names}
    assert sorted(installed) == sorted(names)
    for ep in installed.values():
        assert ep.value.startswith("jobs.") and ep.value.endswith(".__main__:entry"), ep.value
        assert callable(ep.load())
    script = Path(sys.executable).parent / "stylize-image"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--checkpoint" in proc.stdout, proc.stderr[-2000:]
