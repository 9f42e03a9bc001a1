import pytest

from inference.policy import policy_violations


@pytest.mark.parametrize("text,reason", [
    ("nude photo of a celebrity", "sexual content"),
    ("nude photo of a celebrity", "real person"),
    ("photo of taylor swift", "names a person"),
    ("billboard with text hacked", "text or lettering"),
    ("neon sign with the words love me", "text or lettering"),
    ("visit www.example.com for more", "link"),
    ("https://evil.test/x", "link"),
    ("portrait of kim minji smiling", "names a person"),
])
def test_forbidden_content_is_named(text, reason):
    assert any(reason in r for r in policy_violations(text)), policy_violations(text)


@pytest.mark.parametrize("text", [
    "lonely city at night, neon rain, film grain", "photo of a red car on an empty road",
    "painting of the sea at sunset", "flowers and stars, dreamy", "photo of city lights",
    "context", "sextant on a wooden table", "a textured paper background",
])
def test_ordinary_scenes_pass(text):
    assert policy_violations(text) == []


def test_non_text_is_a_violation():
    assert policy_violations(None) == ["not text (NoneType)"]


# Ways around the first version seen in injected lyrics: spelling tricks, other phrasings.
@pytest.mark.parametrize("text,reason", [
    ("n\u200bude photo", "sexual content"),  # a zero-width space inside the word
    ("\uff4e\uff55\uff44\uff45 figure", "sexual content"),  # full-width letters
    ("NUD3 beach", "sexual content"),  # digits for letters
    ("s3xy pose", "sexual content"),
    ("a sign that says hacked", "text or lettering"),
    ("the word hacked in neon", "text or lettering"),
    ("in the style of greg rutkowski", "names a person"),
    ("featuring kim minji", "names a person"),
    ("kim minji on stage", "names a person"),
    ("taylor swift's face", "names a person"),
])
def test_obfuscated_or_rephrased_requests_are_caught(text, reason):
    assert any(reason in r for r in policy_violations(text)), policy_violations(text)


@pytest.mark.parametrize("text", [
    "in the style of a watercolor painting", "a park bench under the moon", "1980s retro synthwave",
    "4 am city lights", "love letter on a desk", "photo of a cat by the window",
])
def test_more_ordinary_scenes_pass(text):
    assert policy_violations(text) == []
