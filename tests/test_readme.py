"""README.md's Python examples run as written (each in a fresh temporary directory)."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_block(heading):
    """The first ```python block after the line `## {heading}` (and before the next `## `)."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, f"README.md has no section '## {heading}'"
    block = re.search(r"^```python\n(.*?)^```", section.group(1), re.M | re.S)
    assert block, f"README.md's section '## {heading}' has no python block"
    return block.group(1)


@pytest.mark.parametrize("heading", ["Bring your own model and data", "Conditional generation"])
def test_readme_example_runs(heading, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the example writes its files into the working directory
    code = python_block(heading)
    namespace = {"__name__": "__readme__"}
    exec(compile(code, f"README.md ({heading})", "exec"), namespace)
    if heading == "Bring your own model and data":
        assert (tmp_path / "my_vae.keras").is_file() and (tmp_path / "my_artifacts" / "manifest.json").is_file()
        assert (tmp_path / "history.csv").read_text().startswith("epoch,")
        assert namespace["images"].shape == (16, 28, 28, 1)
    else:
        assert namespace["bags"].shape == (8, 28, 28, 1) and namespace["grid"].shape == (20, 28, 28, 1)
