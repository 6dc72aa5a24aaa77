"""Every document the repository cites is in the repository, and no citation needs a tracker.

A reader who clones the repository has its files and nothing else: a comment that cites notes
kept elsewhere, a `docs/` page that was never committed, a section of docs/REFERENCE.md that
does not exist, or an issue number of a tracker they cannot see, sends them nowhere. The checks
read every text file git tracks (tests/data holds generated goldens and is left out; this file's
examples are planted mistakes), so they take well under a second;
`test_checks_catch_planted_mistakes` proves each check can fail.
"""

import functools
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = 'docs/REFERENCE.md'
SELF = 'tests/test_references.py'

# A path ending in .md: `docs/...` in any case, or a capitalized document name (README.md,
# ARCHITECTURE.md; also notes kept outside the repository, which is why it is checked).
# Segments preceded by '/', '.' or a word character belong to a URL or a longer name and are
# not paths of this repository.
DOC_PATH = re.compile(r'(?<![\w./-])((?:\.{1,2}/)*(?:[\w-]+/)*(?:[A-Z][A-Z0-9_]*|(?<=docs/)[\w-]+)'
                      r'\.md)\b')
# The word issue(s) and a number, with or without '#', a range or a list. A URL of another project's issue
# ("github.com/numpy/numpy/issues/28340") has a slash after the word and does not match.
ISSUE = re.compile(r'(?<![\w/])issues?\s*#?\s*\d+', re.IGNORECASE)
# The planted citations below are put together from this word, so this file cites no tracker.
TRACKER_WORD = 'issue'
# "REFERENCE.md §1.3", "REFERENCE.md §7.6-§7.9", "REFERENCE.md §2.4, §2.7" (the name and the
# first section may be split over two lines). A section runs up to a space or punctuation.
_SECTION_TEXT = r'§([^\s,;:)\]`\-–§]*)'
CITATION = re.compile(r'REFERENCE\.md\s*' + _SECTION_TEXT
                      + r'((?:\s*(?:,|-|–|and)\s*§[^\s,;:)\]`\-–§]*)*)')
SECTION = re.compile(r'\d+(?:\.\d+)*')
HEADING = re.compile(r'^(#{2,4}) (\d+(?:\.\d+)*)\.? ', re.MULTILINE)


@functools.cache
def tracked_files() -> tuple[str, ...]:
  result = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True)
  assert result.returncode == 0, 'run the tests in a git checkout: they check the tracked files'
  return tuple(name for name in result.stdout.decode().split('\0') if name)


def read_text(name: str):
  """The file's text (a notebook: its cells' sources), or None for binary and missing files."""
  path = ROOT / name
  if not path.is_file():
    return None
  data = path.read_bytes()
  if b'\0' in data[:8192]:
    return None
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError:
    return None
  if name.endswith('.ipynb'):
    cells = json.loads(text)['cells']
    text = '\n'.join(''.join(cell['source']) for cell in cells)
  return text


@functools.cache
def texts() -> dict[str, str]:
  out = {}
  for name in tracked_files():
    if name.startswith('tests/data/') or name == SELF:
      continue
    text = read_text(name)
    if text is not None:
      out[name] = text
  return out


def sections(reference_text: str) -> set[str]:
  return {match.group(2) for match in HEADING.finditer(reference_text)}


def line_of(text: str, index: int) -> int:
  return text.count('\n', 0, index) + 1


def cited_sections(text: str):
  """(line, section text) of every section a `REFERENCE.md §...` citation names."""
  for match in CITATION.finditer(text):
    first, rest = match.group(1), match.group(2)
    for section in [first] + re.findall(_SECTION_TEXT, rest):
      yield line_of(text, match.start()), section.rstrip('.')


def problems(name: str, text: str, tracked: set[str], known_sections: set[str]) -> list[str]:
  """What is wrong with the citations of one file, as 'name:line: message' strings."""
  found = []
  basenames = {Path(t).name for t in tracked}
  for match in DOC_PATH.finditer(text):
    cited = match.group(1)
    if '/' in cited:
      # `../README.md` is relative to the citing file, `docs/X.md` to the repository's root.
      base = os.path.dirname(name) if cited.startswith('.') else ''
      ok = os.path.normpath(os.path.join(base, cited)).replace(os.sep, '/') in tracked
    else:
      ok = cited in basenames
    if not ok:
      found.append(f'{name}:{line_of(text, match.start())}: cites {cited}, which is not in the '
                   f'repository (git ls-files); cite a section of {REFERENCE} or commit it')
  for match in ISSUE.finditer(text):
    found.append(f'{name}:{line_of(text, match.start())}: {match.group(0)!r} refers to an issue '
                 f'tracker readers do not have; describe the thing itself')
  for line, section in cited_sections(text):
    if not SECTION.fullmatch(section):
      found.append(f'{name}:{line}: REFERENCE.md §{section} is not a section number')
    elif section not in known_sections:
      found.append(f'{name}:{line}: REFERENCE.md §{section} does not exist (no heading '
                   f'"{section}" in {REFERENCE})')
  return found


def reference_sections() -> set[str]:
  text = texts().get(REFERENCE)
  assert text is not None, f'{REFERENCE} is not tracked by git'
  return sections(text)


def test_citations_point_inside_the_repository():
  tracked = set(tracked_files())
  known = reference_sections()
  found = [p for name, text in sorted(texts().items())
           for p in problems(name, text, tracked, known)]
  assert not found, '\n'.join(found)


def test_reference_cross_references_exist():
  """Inside REFERENCE.md a bare `§N.M` means one of its own sections."""
  text = texts()[REFERENCE]
  known = sections(text)
  missing = [f'{REFERENCE}:{line_of(text, m.start())}: §{m.group(1)}'
             for m in re.finditer(r'§(\d+(?:\.\d+)*)', text) if m.group(1) not in known]
  assert not missing, 'cross-references to missing sections:\n' + '\n'.join(missing)


def test_reference_sections_are_numbered_in_order():
  """`## N.` then `### N.1`, `### N.2` ...: each number once, subsections under their section."""
  text = texts()[REFERENCE]
  expected_top, expected_sub, errors = 1, 1, []
  for match in HEADING.finditer(text):
    level, number = len(match.group(1)), match.group(2)
    parts = [int(p) for p in number.split('.')]
    if level == 2:
      if parts != [expected_top]:
        errors.append(f'## {number}: expected {expected_top}')
      expected_top, expected_sub = parts[0] + 1, 1
    elif level == 3:
      if parts != [expected_top - 1, expected_sub]:
        errors.append(f'### {number}: expected {expected_top - 1}.{expected_sub}')
      expected_sub = parts[-1] + 1
  assert not errors, '\n'.join(errors)


@pytest.mark.parametrize('planted, complaint', [
    ('# as the official code does (NOTES.md §1.3)', 'NOTES.md, which is not in'),
    ('"""Freeze-D (PRIVATE_NOTES_2.md §A.8)."""', 'PRIVATE_NOTES_2.md, which is not in'),
    ('measured with the TPU compiler (docs/PODS.md)', 'docs/PODS.md, which is not in'),
    ('the style guide (STYLE.md) says', 'STYLE.md, which is not in'),
    (f'# fixed in {TRACKER_WORD} 7', 'issue tracker'),
    (f'({TRACKER_WORD} #7; see there)', 'issue tracker'),
    (f'{TRACKER_WORD.title()}s 3-5 were about speed.', 'issue tracker'),
    ('# R1 (REFERENCE.md §42.1)', 'does not exist'),
    ('# the losses (REFERENCE.md §2.2, §2.99)', '§2.99 does not exist'),
    ('# the schedule (REFERENCE.md §3.3-§3.77)', '§3.77 does not exist'),
    ('""" pipeline (REFERENCE.md\n§7.42): ..."""', '§7.42 does not exist'),
    ('(REFERENCE.md §A.3)', 'not a section number'),
])
def test_checks_catch_planted_mistakes(planted, complaint):
  """Each kind of bad citation, planted in a file's text, is reported."""
  tracked = set(tracked_files())
  found = problems('planted.py', f'x = 1\n{planted}\n', tracked, reference_sections())
  assert any(complaint in p for p in found), (planted, found)


@pytest.mark.parametrize('fine', [
    '# (REFERENCE.md §1.3) and REFERENCE.md §7.6-§7.9; REFERENCE.md §2.4, §2.7.',
    'pickled (github.com/numpy/numpy/issues/28340) by numpy 2',
    'https://github.com/NVlabs/stylegan2/blob/master/README.md',
    'How the code is laid out: [docs/ARCHITECTURE.md](docs/ARCHITECTURE.md).',
    'writes parity_table.md into the output folder',
    'this may be an issue for 3 reasons',
])
def test_checks_pass_good_citations(fine):
  tracked = set(tracked_files())
  assert problems('fine.py', fine, tracked, reference_sections()) == []
