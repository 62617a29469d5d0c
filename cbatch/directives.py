"""Parse '#CBATCH key=value' directives from a job script's text (pure: no I/O).

Like qsub's '#PBS' lines, directives are read from the leading block of the script: the
'#!' line, comments and blank lines. The first command line ends the block; '#CBATCH'
lines after it are ordinary comments, as '#PBS' lines are to qsub.
"""

from __future__ import annotations

import dataclasses
import re

from cbatch.errors import DirectiveError

PREFIX = "#CBATCH"
KEYS = ("image",)
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
MAX_LINE = 1024  # characters of one #CBATCH line
MAX_VALUE = 128  # characters of one value (an image alias)
_SHOWN = 40  # characters of the user's text echoed in an error (and so in the log)


@dataclasses.dataclass(frozen=True, slots=True)
class Directives:
    image: str | None = None
    image_line: int | None = None


def parse(text: str) -> Directives:
    """Directives found in the script's leading comment block.

    Raises:
        DirectiveError: a malformed line, an unknown key or a key given twice.
    """
    found: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            break
        if not (line.startswith(PREFIX) and (len(line) == len(PREFIX) or line[len(PREFIX)].isspace())):
            continue
        if len(line) > MAX_LINE:
            raise DirectiveError(number, f"the line is longer than {MAX_LINE} characters")
        words = line[len(PREFIX):].split()
        if not words:
            raise DirectiveError(number, "expected key=value after #CBATCH")
        for word in words:
            key, sep, value = word.partition("=")
            if not sep or not _KEY.match(key):
                raise DirectiveError(number, f"expected key=value, got {_shown(word)}")
            if key not in KEYS:
                raise DirectiveError(number, f"unknown key {_shown(key)}; known keys: "
                                             f"{', '.join(KEYS)}")
            if len(value) > MAX_VALUE:
                raise DirectiveError(number, f"the value of {key} is longer than {MAX_VALUE} "
                                             "characters")
            if not _VALUE.match(value):
                raise DirectiveError(number, f"bad value for {key}: {_shown(value)}")
            if key in found:
                raise DirectiveError(number, f"{key} is already set on line {found[key][1]}")
            found[key] = (value, number)
    image = found.get("image")
    return Directives(image=image[0] if image else None, image_line=image[1] if image else None)


def _shown(text: str) -> str:
    """The user's text quoted for an error line, cut so a long one is not echoed whole."""
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + "..."
