import pytest

from sleeve.ids import content_hash, hash_email, mask_email, stable_id


def test_stable_id_is_deterministic_and_unambiguous():
    assert stable_id("melon", "123") == stable_id("melon", "123")
    assert stable_id("a", "bc") != stable_id("ab", "c")


def test_content_hash_ignores_key_order():
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})


def test_email_masking_and_keyed_hash():
    assert mask_email("alice@example.com") == "a***@e***.com"
    assert "alice" not in mask_email("alice@example.com")
    assert hash_email(" Alice@Example.com", "k") == hash_email("alice@example.com", "k")
    assert hash_email("alice@example.com", "k1") != hash_email("alice@example.com", "k2")
    with pytest.raises(ValueError):
        mask_email("not-an-email")
