"""Bearer tokens: prefix, 43 base62 characters, every character as likely as another;
identifiers minted together: distinct and adjacent."""

from __future__ import annotations

from collections import Counter

import pytest

from keyfob import tokens

BASE62 = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@pytest.mark.parametrize("prefix", tokens.PREFIXES)
def test_a_token_is_its_prefix_and_43_base62_characters(prefix: str) -> None:
    made = [tokens.new_token(prefix), *tokens.new_tokens(prefix, 50)]

    assert all(t.startswith(prefix) and len(t) == len(prefix) + 43 for t in made)
    assert all(set(t[len(prefix) :]) <= BASE62 for t in made)
    assert all(tokens.looks_like(t, prefix) for t in made)
    assert len(set(made)) == len(made)


def test_batches_of_tokens_are_uniform_over_the_alphabet() -> None:
    """Rejection sampling keeps base62 uniform: mapping all 256 byte values (``byte % 62``)
    would make 0-7 a quarter likelier than the rest."""
    drawn = [t for _ in range(100) for t in tokens.new_tokens(tokens.LEASE, 100)]
    counts = Counter("".join(t[4:] for t in drawn))

    assert set(counts) == BASE62
    expected = 43 * len(drawn) / 62  # ~6,935 each; a standard deviation is ~83
    assert all(abs(n - expected) < 0.08 * expected for n in counts.values()), counts
    assert len(set(drawn)) == len(drawn)


def test_unknown_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown token prefix"):
        tokens.new_tokens("kfx_", 2)
    with pytest.raises(ValueError, match="unknown token prefix"):
        tokens.new_token("kfx_")


def test_ids_of_a_batch_are_distinct_hex_and_adjacent() -> None:
    batches = [tokens.new_ids(100) for _ in range(200)]
    ids = [i for batch in batches for i in batch]

    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
    assert len(set(ids)) == len(ids)
    # Sorted as the index holds them, a batch's ids are one run.
    assert all(sorted(batch) == batch for batch in batches)
    assert tokens.new_ids(256)[-1].endswith("ff")
    with pytest.raises(ValueError, match="share a base"):
        tokens.new_ids(257)
