import pytest

from cbatch import directives
from cbatch.errors import DirectiveError


@pytest.mark.parametrize("text,image,line", [
    ("#!/bin/bash\necho hi\n", None, None),
    ("#!/bin/bash\n#CBATCH image=slc6\necho hi\n", "slc6", 2),
    ("#!/bin/bash\n#PBS -l nodes=1\n\n  #CBATCH   image=el9  \n", "el9", 4),
    ("#!/bin/bash\necho first\n#CBATCH image=slc6\n", None, None),  # after a command: a comment
    ("#!/bin/bash\n#CBATCHX image=slc6\n", None, None),  # another prefix, not ours
])
def test_parse_reads_the_leading_block(text, image, line):
    found = directives.parse(text)
    assert (found.image, found.image_line) == (image, line)


@pytest.mark.parametrize("text,message", [
    ("#!/bin/bash\n#CBATCH\n", "line 2 of the job script: expected key=value after #CBATCH"),
    ("#CBATCH image\n", "line 1 of the job script: expected key=value, got 'image'"),
    ("#\n#\n#CBATCH colour=red\n", "line 3 of the job script: unknown key 'colour'; known keys: image"),
    ("#CBATCH image=a\n#CBATCH image=b\n", "line 2 of the job script: image is already set on line 1"),
    ("#CBATCH image=../etc\n", "bad value for image: '../etc'"),
])
def test_errors_name_the_line(text, message):
    with pytest.raises(DirectiveError) as info:
        directives.parse(text)
    assert message in str(info.value)
    assert str(info.value).startswith("bad #CBATCH directive on line")


@pytest.mark.parametrize("text,message", [
    ("#CBATCH image=" + "a" * 100_000 + "\n", "line 1 of the job script: the line is longer than "
                                             "1024 characters"),
    ("#CBATCH image=" + "a" * 129 + "\n", "the value of image is longer than 128 characters"),
    ("#CBATCH image=" + "/" * 100 + "\n", "bad value for image: '" + "/" * 40 + "'..."),
    ("#CBATCH " + "x" * 500 + "\n", "expected key=value, got '" + "x" * 40 + "'..."),
    ("#CBATCH " + "k" * 500 + "=1\n", "unknown key '" + "k" * 40 + "'...; known keys: image"),
])
def test_long_directives_are_refused_and_never_echoed_whole(text, message):
    with pytest.raises(DirectiveError) as info:
        directives.parse(text)
    assert str(info.value).endswith(message) and len(str(info.value)) < 200
