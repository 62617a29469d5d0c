"""The admin CLI explains itself: help and defaults for every option, plain config errors."""

from __future__ import annotations

import argparse

import pytest

from cbatch.admin import cli as admin


def _subparsers(parser: argparse.ArgumentParser):
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub


def test_every_option_has_help_and_shows_its_default():
    for name, parser in _subparsers(admin._parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, f"{name} {action.dest} has no help"
            if action.default not in (None, False):
                assert f"(default: {action.default})" in " ".join(text.split()), \
                    f"{name} {action.dest} hides its default"


def test_kill_and_config_defaults_are_shown():
    assert "(default: SIGKILL)" in admin._parser()._subparsers._group_actions[0].choices[
        "kill"].format_help()
    assert "(default: /etc/cbatch.yaml)" in " ".join(admin._parser().format_help().split())


VALID = 'images:\n  default: el9\n  aliases:\n    el9: {ref: "sha256:%s"}\n' % ("a" * 64)


@pytest.mark.parametrize("text, line", [
    ("images:\n  default: el9\n\tpull: never\n",
     "(line 3): not valid YAML: a tab character (column 1): indent with spaces only"),
    ("images:\n  default: el9\n   pull: never\n",
     "(line 3): not valid YAML: a 'key: value' where none may be (column 8): check the "
     "indentation of this line and the one before, or quote a value that contains ': '"),
    ("images:\n  aliases: [a, b\n",
     "(line 3): not valid YAML: a list opened with '[' on line 2 is not closed with ']'"),
    ('socket:\n  path: "/run/x\n',
     "(line 3): not valid YAML: a quoted value opened on line 2 has no closing quote"),
    ("socket:\n  mode: 0666\n- b\n",
     "(line 3): not valid YAML: this line (column 1) does not fit the indentation of the "
     "block that starts on line 1: check its indentation"),
])
def test_yaml_syntax_errors_are_said_in_plain_words_at_their_line(tmp_path, capsys, text, line):
    path = tmp_path / "cbatch.yaml"
    path.write_text(text)
    assert admin.main(["check-config", "--no-docker", str(path)]) == 1
    assert capsys.readouterr().err == f"cbatch: configuration error at {path} {line}\n"


def test_check_config_takes_a_path_over_the_config_option(tmp_path, capsys):
    path = tmp_path / "new.yaml"
    path.write_text(VALID)
    assert admin.main(["--config", str(tmp_path / "absent.yaml"), "check-config",
                       "--no-docker", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ok (1 images, default el9")


def test_a_config_without_images_fails_the_check(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("container:\n  network: host\n")
    assert admin.main(["check-config", "--no-docker", str(path)]) == 1
    assert capsys.readouterr().err == (
        "cbatch: configuration error at images.aliases: no images are defined, so jobs have "
        "none to run in: define at least one alias and images.default\n")
