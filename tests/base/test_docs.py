"""The docs stay true to the repository: the module list of docs/architecture.md, and citations of files in it."""

from __future__ import annotations

import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_LIST = runpy.run_path(str(ROOT / "docs" / "module_list.py"))
# the shared notes the project started from, which a clone does not have (their pattern, not their names,
# so this file does not cite them itself)
OUTSIDE_NOTES = re.compile(r"\b(?:DESIGN|STYLE|NOTES)\.md\b")
SKIPPED_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis", "runs"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg", ".ini", ".yml", ".yaml"}


def _architecture() -> str:
    return (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_every_module_is_listed_in_architecture():
    table = MODULE_LIST["embedded_table"](_architecture())
    assert table is not None, "docs/architecture.md lost its module-list markers"
    missing = [f"{name} ({path.relative_to(ROOT)})" for name, path in MODULE_LIST["module_files"]()
               if f"| `{name}` | `{path.relative_to(ROOT).as_posix()}` |" not in table]
    assert not missing, f"modules missing from docs/architecture.md: {missing}; run python docs/module_list.py --update"


def test_module_list_covers_every_package_folder():
    folders = {path.parent.name for _, path in MODULE_LIST["module_files"]()}
    assert folders == {"tiltstream", "acquire", "recon", "live", "simulator"}


def test_embedded_module_list_is_the_generated_one():
    assert MODULE_LIST["embedded_table"](_architecture()) == MODULE_LIST["module_table"](), (
        "docs/architecture.md's module list is out of date; run python docs/module_list.py --update")


def test_module_list_script_prints_the_table():
    done = subprocess.run([sys.executable, str(ROOT / "docs" / "module_list.py")], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout == MODULE_LIST["module_table"]()


def _repository_text_files():
    """The repository's text files: git's tracked and untracked-but-not-ignored files in a checkout."""
    if (ROOT / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                                capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
        paths = (ROOT / name for name in listed)
    else:
        paths = (path for path in ROOT.rglob("*") if not SKIPPED_DIRS & set(path.relative_to(ROOT).parts))
    for path in paths:
        if path.suffix in TEXT_SUFFIXES and path.is_file():
            yield path


def test_no_file_cites_notes_outside_the_repository():
    citing = [f"{path.relative_to(ROOT)}:{number}" for path in _repository_text_files()
              for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
              if OUTSIDE_NOTES.search(line)]
    assert not citing, ("cite docs/design.md, docs/style.md or docs/method.md instead of notes outside the "
                        f"repository: {citing}")


def _numbers(doc: str) -> set[str]:
    """Section numbers of a docs page (``## 6. Wire format``) and, for style.md, its numbered habits."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    return set(re.findall(r"^## (\d+)\. ", text, re.M)) | set(re.findall(r"^(\d+)\. \*\*", text, re.M))


def test_cited_sections_exist():
    docs = {doc: _numbers(doc) for doc in ("design.md", "method.md", "style.md")}
    unknown = sorted({f"{path.relative_to(ROOT)} cites docs/{doc} {number}" for path in _repository_text_files()
                      for doc, number in re.findall(r"docs/(design\.md|method\.md|style\.md) (\d+)",
                                                    path.read_text(encoding="utf-8", errors="replace"))
                      if number not in docs[doc]})
    assert not unknown, f"no such section: {unknown}"
