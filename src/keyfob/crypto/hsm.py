"""The PKCS#11 master key provider: an AES-256 key on an HSM token wraps the keyring.

The key is made on the token (sensitive, not extractable), so it never leaves it: keyfob
sends the 32-byte KEKs and the system-key blob to the token for AES-GCM (``CKM_AES_GCM``)
and gets them back. The blob is ``nonce:12 | ciphertext | tag:16``, the same shape as
the local provider's, with the same associated data. The token is asked only at
start-up, at rotation and when another node adds a term, never per request.

Imported only when ``KEYFOB_MASTER_KEY_PROVIDER=pkcs11``: the serving process does not
load ``pkcs11`` (python-pkcs11, the ``hsm`` extra) otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from keyfob.errors import ConfigurationError, DecryptionFailed, Unavailable
from keyfob.secret import Masked, Secret

_NONCE = 12
_TAG_BITS = 128
_PROBE = b"keyfob/hsm-probe/v1"
_PIN_HELP = "KEYFOB_PKCS11_PIN or KEYFOB_PKCS11_PIN_FILE"
# After these a new session may work: the session, the login or the token went away.
_SESSION_LOST = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.UserNotLoggedIn,
    p11.KeyHandleInvalid,
    p11.ObjectHandleInvalid,
    p11.DeviceRemoved,
    p11.DeviceError,
    p11.TokenNotPresent,
)


def _reason(exc: BaseException) -> str:
    """A PKCS#11 error as words: the exception's class names the CKR_ code; never a PIN."""
    return type(exc).__name__


class Pkcs11MasterKey(Masked):
    """An open, logged-in session on one token and the handle of its wrapping key."""

    shown = ("module", "token_label", "key_label")

    def __init__(self, module: Path, token_label: str, key_label: str, pin: Secret[str]) -> None:
        self.module = module
        self.token_label = token_label
        self.key_label = key_label
        self._pin = pin
        self._lock = threading.Lock()
        self._token: Any = None
        self._session: Any = None
        self._key: Any = None
        # Set when the token refused the PIN on logging in again: never retried, since
        # tokens lock a PIN after a few wrong tries.
        self._refused: str | None = None

    # -- opening ----------------------------------------------------------------------

    @classmethod
    def open(
        cls, module: Path, token_label: str, key_label: str, pin: Secret[str], *, create: bool
    ) -> Pkcs11MasterKey:
        """Log in and find the key (``create``: make it if the token has none).

        Every way this can fail is a ``ConfigurationError`` that says which setting to fix.
        """
        provider = cls(module, token_label, key_label, pin)
        provider._connect(create=create)
        return provider

    def _connect(self, *, create: bool) -> None:
        if not self.module.is_file():
            raise ConfigurationError(
                f"KEYFOB_PKCS11_MODULE {self.module} does not exist (the PKCS#11 library, "
                "e.g. /usr/lib/softhsm/libsofthsm2.so)"
            )
        try:
            lib = pkcs11.lib(str(self.module))
        except p11.PKCS11Error:
            raise ConfigurationError(
                f"KEYFOB_PKCS11_MODULE {self.module} could not be loaded as a PKCS#11 library"
            ) from None
        try:
            token = lib.get_token(token_label=self.token_label)
        except p11.NoSuchToken:
            present = sorted({t.label for t in lib.get_tokens() if t.label})
            raise ConfigurationError(
                f"no PKCS#11 token labelled {self.token_label!r} in {self.module} "
                f"(tokens there: {', '.join(repr(p) for p in present) or 'none'}); "
                "check KEYFOB_PKCS11_TOKEN_LABEL"
            ) from None
        except p11.MultipleTokensReturned:
            raise ConfigurationError(
                f"several PKCS#11 tokens are labelled {self.token_label!r}; give each a "
                "unique label"
            ) from None
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"the PKCS#11 module {self.module} cannot list its tokens ({_reason(exc)})"
            ) from None
        self._token = token
        self._session = self._login(token, rw=create)
        self._key = self._find_key(create=create)

    def _login(self, token: Any, *, rw: bool) -> Any:
        try:
            return token.open(user_pin=self._pin.reveal(), rw=rw)
        except p11.UserAlreadyLoggedIn:
            # PKCS#11 login belongs to the whole process: another session of ours (an
            # earlier vault in this process) is logged in with a PIN the token accepted.
            return token.open(rw=rw)
        except p11.PinIncorrect:
            raise ConfigurationError(
                f"PKCS#11 token {self.token_label!r} refused the PIN ({_PIN_HELP} is wrong)"
            ) from None
        except p11.PinLocked:
            raise ConfigurationError(
                f"PKCS#11 token {self.token_label!r} has locked its user PIN (too many wrong "
                "tries); the security officer must unlock it"
            ) from None
        except (p11.PinExpired, p11.PinInvalid, p11.PinLenRange, p11.UserPinNotInitialized) as exc:
            raise ConfigurationError(
                f"PKCS#11 token {self.token_label!r} refused the login ({_reason(exc)}); "
                f"check {_PIN_HELP}"
            ) from None
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"cannot open a session on PKCS#11 token {self.token_label!r} ({_reason(exc)})"
            ) from None

    def _find_key(self, *, create: bool) -> Any:
        try:
            key = self._session.get_key(
                object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=self.key_label
            )
        except p11.NoSuchKey:
            if not create:
                raise ConfigurationError(
                    f"no AES key labelled {self.key_label!r} on PKCS#11 token "
                    f"{self.token_label!r}; check KEYFOB_PKCS11_KEY_LABEL (`keyfob init` "
                    "makes one for a new vault)"
                ) from None
            return self._generate()
        except p11.MultipleObjectsReturned:
            raise ConfigurationError(
                f"several AES keys are labelled {self.key_label!r} on PKCS#11 token "
                f"{self.token_label!r}; keyfob needs exactly one"
            ) from None
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"cannot look for key {self.key_label!r} on PKCS#11 token "
                f"{self.token_label!r} ({_reason(exc)})"
            ) from None
        if not (key[Attribute.ENCRYPT] and key[Attribute.DECRYPT]):
            raise ConfigurationError(
                f"the PKCS#11 key {self.key_label!r} may not encrypt and decrypt "
                "(CKA_ENCRYPT and CKA_DECRYPT must be true)"
            )
        return key

    def _generate(self) -> Any:
        try:
            return self._session.generate_key(
                KeyType.AES,
                256,
                label=self.key_label,
                store=True,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                },
            )
        except p11.PKCS11Error as exc:
            raise ConfigurationError(
                f"cannot create AES key {self.key_label!r} on PKCS#11 token "
                f"{self.token_label!r} ({_reason(exc)})"
            ) from None

    # -- the provider interface -------------------------------------------------------

    def wrap(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        params = GCMParams(nonce, associated, _TAG_BITS)
        try:
            body = self._run(
                lambda key: key.encrypt(
                    plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except p11.PKCS11Error as exc:
            raise self._unavailable(exc) from None
        return nonce + body

    def unwrap(self, wrapped: bytes, associated: bytes) -> bytes:
        if len(wrapped) < _NONCE + _TAG_BITS // 8:
            raise DecryptionFailed()
        params = GCMParams(wrapped[:_NONCE], associated, _TAG_BITS)
        try:
            return self._run(
                lambda key: key.decrypt(
                    wrapped[_NONCE:], mechanism=Mechanism.AES_GCM, mechanism_param=params
                )
            )
        except p11.PKCS11Error as exc:
            failure = exc
        # Tokens report a tag that does not verify in different ways (SoftHSM2: a general
        # error). If the token still wraps and unwraps, these bytes are what is wrong.
        self.check()
        raise DecryptionFailed() from failure

    def describe(self) -> dict[str, str]:
        return {
            "provider": "pkcs11",
            "module": str(self.module),
            "token_label": self.token_label,
            "key_label": self.key_label,
            "mechanism": "CKM_AES_GCM",
        }

    def check(self) -> None:
        """A round trip through the token; ``Unavailable`` naming what failed if not."""
        params = GCMParams(os.urandom(_NONCE), _PROBE, _TAG_BITS)
        try:
            body = self._run(
                lambda key: key.encrypt(_PROBE, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            )
            back = self._run(
                lambda key: key.decrypt(body, mechanism=Mechanism.AES_GCM, mechanism_param=params)
            )
        except p11.PKCS11Error as exc:
            raise self._unavailable(exc) from None
        if back != _PROBE:
            raise Unavailable(
                f"the PKCS#11 master key {self.key_label!r} on token {self.token_label!r} "
                "does not round-trip"
            )

    def close(self) -> None:
        with self._lock:
            session, self._session, self._key = self._session, None, None
        if session is not None:
            try:
                session.close()
            except p11.PKCS11Error:
                pass  # the token is gone already; nothing left to release

    # -- the session ------------------------------------------------------------------

    def _run(self, operation: Callable[[Any], Any]) -> bytes:
        """``operation(key)`` under the lock; after a lost session, once more on a new one.

        Any other PKCS#11 error is raised as it is, for the caller to judge.
        """
        with self._lock:
            if self._key is None:
                raise Unavailable("the PKCS#11 master key provider is closed")
            try:
                return bytes(operation(self._key))
            except _SESSION_LOST as lost:
                if not self._reopen():
                    raise lost from None
            return bytes(operation(self._key))

    def _reopen(self) -> bool:
        """Log in again and find the key (never make one); False if that fails too."""
        if self._refused is not None:
            return False
        with contextlib.suppress(p11.PKCS11Error):  # already gone, which is why we are here
            self._session.close()
        try:
            session = self._token.open(user_pin=self._pin.reveal())
        except p11.UserAlreadyLoggedIn:
            try:
                session = self._token.open()
            except p11.PKCS11Error:
                return False
        except (p11.PinIncorrect, p11.PinLocked, p11.PinExpired) as exc:
            self._refused = _reason(exc)
            return False
        except p11.PKCS11Error:
            return False
        try:
            key = session.get_key(
                object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=self.key_label
            )
        except p11.PKCS11Error:
            with contextlib.suppress(p11.PKCS11Error):
                session.close()
            return False
        self._session, self._key = session, key
        return True

    def _unavailable(self, exc: BaseException) -> Unavailable:
        if isinstance(exc, Unavailable):
            return exc
        reason = _reason(exc)
        if self._refused is not None:
            reason += f"; logging in again: {self._refused}, check {_PIN_HELP}"
        return Unavailable(
            f"the PKCS#11 master key {self.key_label!r} on token {self.token_label!r} "
            f"is unavailable ({reason})"
        )
