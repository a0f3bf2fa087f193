"""``Vault.ready``: the master key provider is asked at most once per interval (an HSM
round trip per load balancer probe is load for nothing), and a failure shows after it."""

from __future__ import annotations

import pytest

from keyfob.clock import FrozenClock
from keyfob.crypto import MasterKey
from keyfob.errors import Unavailable
from keyfob.vault import Vault
from keyfob.vault.vault import MASTER_CHECK_INTERVAL


class Provider:
    """Stands in for ``check`` of the vault's provider: counts the calls, fails on demand."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    def check(self) -> None:
        self.calls += 1
        if self.failing:
            raise Unavailable("the master key 'probe-label' on token 'probe-token' is gone")


@pytest.fixture
def provider(clocked: Vault, monkeypatch: pytest.MonkeyPatch) -> Provider:
    assert isinstance(clocked.core.ring.master, MasterKey)
    fake = Provider()
    monkeypatch.setattr(MasterKey, "check", fake.check)
    return fake


async def test_the_master_key_is_checked_once_per_interval(
    clocked: Vault, clock: FrozenClock, provider: Provider
) -> None:
    for _ in range(5):
        await clocked.ready()
    assert provider.calls == 1

    clock.advance(MASTER_CHECK_INTERVAL - 0.001)
    await clocked.ready()
    assert provider.calls == 1
    clock.advance(0.001)
    await clocked.ready()
    assert provider.calls == 2
    # A clock set back does not stretch the interval.
    clock.advance(-60)
    await clocked.ready()
    assert provider.calls == 3


async def test_a_failure_shows_once_the_interval_is_over_and_is_kept_through_the_next(
    clocked: Vault, clock: FrozenClock, provider: Provider
) -> None:
    await clocked.ready()
    provider.failing = True
    await clocked.ready()  # the last answer holds within the interval
    clock.advance(MASTER_CHECK_INTERVAL)
    with pytest.raises(Unavailable, match="'probe-label' on token 'probe-token' is gone"):
        await clocked.ready()

    provider.failing = False  # the token is back, but not asked again yet: still unready
    clock.advance(MASTER_CHECK_INTERVAL / 2)
    with pytest.raises(Unavailable, match="is gone"):
        await clocked.ready()
    assert provider.calls == 2
    clock.advance(MASTER_CHECK_INTERVAL / 2)
    await clocked.ready()
    assert provider.calls == 3


async def test_the_log_says_why_once_per_change_and_when_it_is_ready_again(
    clocked: Vault, clock: FrozenClock, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="keyfob.ready")
    await clocked.ready()
    provider.failing = True
    clock.advance(MASTER_CHECK_INTERVAL)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await clocked.ready()
    provider.failing = False
    clock.advance(MASTER_CHECK_INTERVAL)
    await clocked.ready()
    await clocked.ready()
    said = [r.getMessage() for r in caplog.records if r.name == "keyfob.ready"]
    assert said == [
        "not ready: the master key 'probe-label' on token 'probe-token' is gone",
        "ready again",
    ]
