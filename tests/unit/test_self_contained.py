"""The repository stands alone: nothing in it points at documents a clone does not have, and the
docs name only files that exist.

- No tracked text file refers to a design document outside the repository, to its numbered
  sections, or to tracker issue numbers: a reader who cloned the project has none of them. What
  such a reference carried belongs in docs/ (or in the comment itself).
- Every repository path that README.md and docs/*.md name (``appliance/...``, ``proto/...``, …) and
  every relative link in them exists, so the docs cannot silently drift from the tree.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("appliance/rpc/",)  # generated from proto/, never edited
THIS_FILE = Path(__file__).resolve()  # it spells out the references it looks for

OUTSIDE_REFERENCES = [
    (re.compile(r"\.\./shared\b"), "a path outside the repository"),
    (re.compile(r"DESIGN\.md"), "a design document outside the repository"),
    (re.compile("seed" + r"-architecture"), "a design document outside the repository"),
    (re.compile(r"\bContract [0-9]"), "a numbered section of a design document outside the repository"),
    (re.compile(r"\bissues?\s+#?[0-9]+", re.IGNORECASE), "a tracker issue number"),
]
# A hash and a number in prose. Not after "owner/repo" (an upstream project's thread, a real
# link), not an HTML entity, not part of a word or of a longer hash token.
HASH_NUMBER = re.compile(r"(?<![\w/&#])#([0-9]{1,6})(?![\w-])")
COLOUR_FILES = (".css", ".html", ".js", ".svg")  # where a hash and hex digits are a colour

DOCS = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
TOP_DIRS = ("appliance", "proto", "etc", "systemd", "ansible", "tests", "scripts", "docs")
# A repository-relative path in prose or code spans: starts at a top-level folder, not inside a
# longer path ("/etc/appliance/..." on a device is not "etc/appliance/..." of the repository).
REPO_PATH = re.compile(r"(?<![\w/.~$<>-])((?:" + "|".join(TOP_DIRS) + r")/[A-Za-z0-9_./@-]*[A-Za-z0-9_/])")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked_text_files() -> list[Path]:
    names = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True)
        .stdout.decode()
        .split("\0")
    )
    files = []
    for name in filter(None, names):
        path = ROOT / name
        if name.startswith(GENERATED) or not path.is_file() or path.resolve() == THIS_FILE:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (the page's screenshot, …)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def outside_references(path: Path) -> list[str]:
    hits = []
    is_colour_file = path.suffix in COLOUR_FILES
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{number}"
        for pattern, what in OUTSIDE_REFERENCES:
            match = pattern.search(line)
            if match:
                hits.append(f"{where}: {match.group(0)!r} ({what}): {line.strip()[:120]}")
        for match in HASH_NUMBER.finditer(line):
            if is_colour_file and len(match.group(1)) in (3, 4, 6, 8):
                continue
            hits.append(f"{where}: {match.group(0)!r} (an issue number?): {line.strip()[:120]}")
    return hits


def test_no_file_refers_outside_the_repository():
    hits = [hit for path in tracked_text_files() for hit in outside_references(path)]
    assert not hits, "references a clone cannot follow (say it here, or in docs/):\n" + "\n".join(hits)


def test_the_check_catches_what_it_is_for(tmp_path):
    """The patterns themselves: each kind of reference is caught, and look-alikes are not."""
    bad = tmp_path / "bad.py"
    # Assembled from pieces, so that this file itself holds none of the references it looks for.
    dots, hash_ = "." * 2, "#"
    bad.write_text(
        f"# see {dots}/{'shared'}/{'DESIGN'}.md\n# {'Contract'} 2 says so\n# fixed in {'issue'} 7\n"
        f"# as in {hash_}12, again\n# {'seed'}-architecture.md\n"
    )
    assert len(outside_references(bad)) == 6  # line 1 has two
    fine = tmp_path / "fine.py"
    fine.write_text("#!/usr/bin/env python3\n# grpc/grpc#36066 upstream\n# one contract, issued once\n")
    assert outside_references(fine) == []
    css = tmp_path / "style.css"
    css.write_text(":root { --fg: #111; --bg: #111317; }\n")
    assert outside_references(css) == []


def test_paths_the_docs_name_exist():
    missing = []
    for doc in DOCS:
        for number, line in enumerate((ROOT / doc).read_text(encoding="utf-8").splitlines(), 1):
            for match in REPO_PATH.finditer(line):
                if not (ROOT / match.group(1)).exists():
                    missing.append(f"{doc}:{number}: {match.group(1)}")
    assert not missing, "the docs name paths that are not in the repository:\n" + "\n".join(missing)


def anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces → hyphens."""
    text = markdown.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)  # no headings in code blocks
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    }


def test_relative_links_in_the_docs_resolve():
    broken = []
    for doc in DOCS:
        page = ROOT / doc
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue  # a URL
                file, _, anchor = target.partition("#")
                linked = (page.parent / file) if file else page
                if not linked.exists():
                    broken.append(f"{doc}:{number}: {target} (no such file)")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    broken.append(f"{doc}:{number}: {target} (no such heading)")
    assert not broken, "links that go nowhere:\n" + "\n".join(broken)
