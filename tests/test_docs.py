"""The repository stands alone: every relative link in its Markdown resolves to a file in it
(and to a heading, when the link names one), and nothing points at documents that are not in
the repository."""

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

from tests.servers import ROOT

SKIP_DIRS = {".git", ".venv", "var", "node_modules", ".pytest_cache", ".ruff_cache", ".hypothesis"}

# Documents that lived outside the repository, and the way up to them. Written with escapes
# and character classes so that this file does not mention them itself.
OUTSIDE = re.compile(
    r"\.\./shared|shared/[A-Z]|DESIGN\.md|STYLE\.md|PKI-SECURIT[Y]|NGINX-MTL[S]|RFQ-REFERENC[E]"
)

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*.md"):
        parts = path.relative_to(ROOT).parts
        if not SKIP_DIRS & set(parts[:-1]):
            found.append(path)
    return sorted(found)


def repository_files() -> list[str]:
    """Tracked files, and new files not ignored: what a clone of the repository holds."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sorted(name for name in set(listed.split("\0")) if name and (ROOT / name).is_file())


def _prose(text: str) -> str:
    """The Markdown without its code blocks; code spans become plain text (a link's text may be
    code, and code may look like a link)."""
    text = FENCE.sub("", text)
    return CODE_SPAN.sub("code", text)


def links(path: Path) -> list[str]:
    prose = _prose(path.read_text())
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to
    hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(
        ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in ("L", "N", "M")
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_the_markdown_files_are_found():
    names = {str(p.relative_to(ROOT)) for p in markdown_files()}
    assert {"README.md", "docs/architecture.md", "deploy/README.md", "docs/pki.md"} <= names
    assert not [n for n in names if n.startswith((".venv/", "var/"))]


@pytest.mark.parametrize(
    "path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)).replace("/", ":")
)
def test_every_relative_link_resolves_inside_the_repository(path):
    broken = []
    for target in links(path):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            continue  # https:, mailto: and the like
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if ROOT not in resolved.parents and resolved != ROOT:
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, broken


def test_slugs_follow_github():
    assert slug("Distribution URLs (`set_ca_urls`)") == "distribution-urls-set_ca_urls"
    assert slug("What was measured about nginx") == "what-was-measured-about-nginx"
    assert slug("The trust contract between nginx and the app") == (
        "the-trust-contract-between-nginx-and-the-app"
    )
    assert slug("Resumption: a decision") == "resumption-a-decision"


def test_nothing_refers_to_documents_outside_the_repository():
    found: dict[str, list[str]] = {}
    for name in repository_files():
        try:
            text = (ROOT / name).read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary (screenshots)
        lines = [
            f"{n}: {line.strip()}"
            for n, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)
        ]
        if lines:
            found[name] = lines
    assert not found, found
