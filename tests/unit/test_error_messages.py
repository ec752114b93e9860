"""What an error message may show of client input (quoted) and of the server's folders (without_paths),
and how each surface names its own way around a photo without a face (with_skip)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tandem.errors import NoFaceDetected, NoFaceFound, quoted, without_paths

PAYLOADS = ["<img src=x onerror=alert(1)>", '"><script>alert(1)</script>', "a&b", "'; DROP TABLE x; --",
            "é\u202e\x00\n", "\\x3c", "<" * 200, "x" * 1000, "\U0001f600" * 40]


@pytest.mark.parametrize("value", PAYLOADS)
def test_quoted_is_short_ascii_and_never_markup(value):
    q = quoted(value)
    assert len(q) <= 80
    assert q.isascii() and q.isprintable()
    assert not set(q) & set("<>&")


@pytest.mark.parametrize("value", [v for v in PAYLOADS if len(ascii(v)) <= 60])
def test_a_short_value_reads_back_exactly(value):
    # Still a Python literal of the value: \x3c is '<' again, so nothing is lost for a reader.
    assert ast.literal_eval(quoted(value)) == value


def test_plain_names_read_as_before():
    assert quoted("nope") == "'nope'" == repr("nope")
    assert quoted("²") == "'\\xb2'"
    assert quoted(None) == "None" and quoted(12) == "12" and quoted(True) == "True"


def test_long_values_are_cut_with_an_ellipsis_and_never_inside_an_escape():
    q = quoted("<" * 200)
    assert q.endswith("...") and len(q) <= 80
    assert q[:-3].endswith("\\x3c")  # whole escapes only
    assert ast.literal_eval(q[:-3] + "'") == "<" * ((len(q) - 4) // 4)
    assert quoted("x" * 1000, limit=20) == "'" + "x" * 16 + "..."
    assert len(quoted("<script>" * 100, limit=40)) <= 40


def test_structures_are_shown_short():
    q = quoted({"a": ["<script>"] * 1000, "b": "x" * 10_000})
    assert len(q) <= 80 and "<" not in q
    assert quoted(b"<b>") == "b'\\x3cb\\x3e'"


def test_an_int_too_long_to_print_does_not_raise():
    import sys

    if not hasattr(sys, "get_int_max_str_digits"):
        pytest.skip("no limit on int digits in this Python")
    assert quoted(10 ** (sys.get_int_max_str_digits() + 10)) == "(a value too long to show)"


def test_paths_under_hidden_folders_are_named_not_shown(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    places = {"TANDEM_HOME": home, "~": tmp_path}
    message = (f"object abc is missing from the artifact store at {home}/objects: the store was changed; "
               f"({home}/bundles/faces/1/model.onnx) '{home}' {tmp_path}/other.txt, and {home}x stays apart")
    shown = without_paths(message, places)
    assert str(tmp_path) not in shown
    assert shown == ("object abc is missing from the artifact store at TANDEM_HOME/…: the store was changed; "
                     "(TANDEM_HOME/…) 'TANDEM_HOME/…' ~/…, and ~/… stays apart")


def test_paths_are_found_through_symlinks(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert without_paths(f"{real}/x: broken", {"TANDEM_HOME": tmp_path / "link"}) == "TANDEM_HOME/…: broken"


def test_messages_without_paths_are_untouched():
    message = "no route GET '/v3/x'; see /openapi.json; it is served at /v2/models/faces/infer"
    assert without_paths(message, {"TANDEM_HOME": Path("/srv/tandem"), "~": Path("/root")}) == message


def test_each_surface_names_its_own_way_to_skip_finding_the_face():
    found_none = NoFaceDetected("no face found in the photo")
    cli = found_none.with_skip("--no-detect")
    assert str(cli) == "no face found in the photo (or --no-detect for a photo that is already a cropped, aligned face)"
    assert type(cli) is NoFaceFound and cli.with_skip("?detect=false") is cli  # said once, by one surface
    # The landmark network saw no face where the face should be: skipping the finder would not help.
    aligned = NoFaceFound("no face found in the photo (face probability 0.10 where the face should be)")
    assert aligned.with_skip("--no-detect") is aligned
