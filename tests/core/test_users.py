"""Dashboard users: argon2 passwords, sessions, and the backoff after failed sign-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keyfob.clock import FrozenClock
from keyfob.errors import Conflict, TooManyRequests, Unauthorized, ValidationFailed
from keyfob.secret import Secret
from keyfob.settings import Settings
from keyfob.vault import Context, Vault
from keyfob.vault.users import BASE_LOCK, FREE_ATTEMPTS, MAX_LOCK, SESSION_TTL, lock_seconds

PASSWORD = "correct horse battery staple"
CLIENT = Context("anonymous", client="127.0.0.1")


@pytest.fixture
async def timed(settings: Settings) -> AsyncIterator[tuple[Vault, FrozenClock]]:
    clock = FrozenClock()
    vault, _ = await Vault.initialise(settings, clock=clock)
    await vault.users.create(Context("operator:test"), "alice", Secret(PASSWORD))
    try:
        yield vault, clock
    finally:
        await vault.close()


def test_lock_grows_from_the_free_attempts_and_is_capped() -> None:
    assert [lock_seconds(n) for n in range(FREE_ATTEMPTS)] == [0] * FREE_ATTEMPTS
    assert lock_seconds(FREE_ATTEMPTS) == BASE_LOCK
    assert lock_seconds(FREE_ATTEMPTS + 1) == 2 * BASE_LOCK
    assert lock_seconds(FREE_ATTEMPTS + 30) == MAX_LOCK


@pytest.mark.parametrize(
    ("name", "password"),
    [("Alice", PASSWORD), ("al ice", PASSWORD), ("bob", "short"), ("bob", "x" * 1025)],
)
async def test_bad_names_and_passwords_are_refused(vault: Vault, name: str, password: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        await vault.users.create(Context("operator:test"), name, Secret(password))
    assert password not in str(caught.value.problem())
    assert await vault.users.list_all() == []


async def test_names_are_unique_and_hashes_never_shown(vault: Vault) -> None:
    await vault.users.create(Context("operator:test"), "alice", Secret(PASSWORD))
    with pytest.raises(Conflict):
        await vault.users.create(Context("operator:test"), "alice", Secret(PASSWORD + "!"))
    (listed,) = await vault.users.list_all()
    assert "argon2" not in str(listed)
    assert PASSWORD not in str(listed)


async def test_sign_in_gives_a_session_that_sign_out_ends(
    timed: tuple[Vault, FrozenClock],
) -> None:
    vault, _ = timed
    principal, token = await vault.users.sign_in("alice", Secret(PASSWORD), CLIENT)
    assert principal.actor.startswith("user:")
    assert await vault.users.session(token.reveal()) == principal
    await vault.users.sign_out(token.reveal(), Context(principal.actor))
    assert await vault.users.session(token.reveal()) is None
    actions = [e.action for e in await vault.audit.query(action="user.")]
    assert actions == ["user.create", "user.login", "user.logout"]


async def test_sessions_expire(timed: tuple[Vault, FrozenClock]) -> None:
    vault, clock = timed
    _, token = await vault.users.sign_in("alice", Secret(PASSWORD), CLIENT)
    clock.advance(SESSION_TTL - 1)
    assert await vault.users.session(token.reveal()) is not None
    clock.advance(1)
    assert await vault.users.session(token.reveal()) is None


async def test_repeated_failures_lock_the_account_then_it_opens_again(
    timed: tuple[Vault, FrozenClock],
) -> None:
    vault, clock = timed
    for _ in range(FREE_ATTEMPTS):
        with pytest.raises(Unauthorized):
            await vault.users.sign_in("alice", Secret("wrong password!"), CLIENT)
    # Locked now: even the right password is refused until the lock runs out.
    with pytest.raises(TooManyRequests) as locked:
        await vault.users.sign_in("alice", Secret(PASSWORD), CLIENT)
    assert locked.value.extra["retry_after"] == BASE_LOCK
    clock.advance(BASE_LOCK)
    await vault.users.sign_in("alice", Secret(PASSWORD), CLIENT)
    failures = await vault.audit.query(action="user.login_failed")
    assert [e.details["reason"] for e in failures] == ["bad_password"] * FREE_ATTEMPTS + ["locked"]
    assert failures[FREE_ATTEMPTS - 1].details["locked_for"] == BASE_LOCK
    assert all(PASSWORD not in str(e.as_dict()) for e in failures)


async def test_unknown_users_fail_the_same_way_and_are_audited(
    timed: tuple[Vault, FrozenClock],
) -> None:
    vault, _ = timed
    with pytest.raises(Unauthorized) as unknown:
        await vault.users.sign_in("mallory", Secret(PASSWORD), CLIENT)
    with pytest.raises(Unauthorized) as wrong:
        await vault.users.sign_in("alice", Secret("not the password"), CLIENT)
    assert unknown.value.detail == wrong.value.detail
    (event,) = await vault.audit.query(action="user.login_failed", target="user:?")
    assert event.details["reason"] == "unknown_user"
