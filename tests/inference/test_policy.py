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
