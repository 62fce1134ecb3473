"""Errors echo what the user gave, but never a megabyte of it."""

from ciliumctl.base.errors import UsageError, shorten


def test_a_long_word_keeps_its_ends_and_the_advice_after_it():
    msg = str(UsageError(f"label 'app={'a' * 1_000_000}': expected key=value, e.g. --labels org=empire"))
    assert len(msg) < 400 and msg.startswith("label 'app=aaa") and "…[999847 characters]…" in msg
    assert msg.endswith("aaaa': expected key=value, e.g. --labels org=empire")


def test_a_long_message_of_short_words_keeps_head_and_tail():
    msg = shorten("x " * 100_000 + "what to do")
    assert len(msg) < 2100 and msg.startswith("x x") and msg.endswith("what to do")


def test_ordinary_messages_are_untouched():
    text = "endpoint 'web' not found; see `ciliumctl endpoint list` " + "/a" * 90
    assert shorten(text) == text
