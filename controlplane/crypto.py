"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with a key derived from
``PORTSIDE_SECRET_KEY``, so any long random string works as the setting's value."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from controlplane.errors import ConfigError, PermanentError
from controlplane.settings import Settings


class UndecryptableSecret(PermanentError):
    """Stored ciphertext does not open with the configured key (was it rotated?)."""


def _fernet_key(secret_key: str) -> bytes:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"portside-secrets-v1", info=b"fernet"
    ).derive(secret_key.encode())
    return base64.urlsafe_b64encode(derived)


class SecretBox:
    """Encrypts and decrypts stored secrets with the process's secret key."""

    def __init__(self, secret_key: str, old_keys: tuple[str, ...] = ()) -> None:
        if not secret_key:
            raise ConfigError("PORTSIDE_SECRET_KEY must be set to store secrets")
        # The first key encrypts; every key decrypts (so a key can be rotated).
        self._fernet = MultiFernet([Fernet(_fernet_key(key)) for key in (secret_key, *old_keys)])

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(
            settings.secret_key.reveal(), tuple(key.reveal() for key in settings.old_secret_keys)
        )

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypt with the current key whatever key encrypted it."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken:
            raise UndecryptableSecret(
                "a stored secret opens with neither PORTSIDE_SECRET_KEY nor PORTSIDE_SECRET_KEY_OLD"
            ) from None

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken:
            raise UndecryptableSecret(
                "a stored secret cannot be decrypted with PORTSIDE_SECRET_KEY"
            ) from None
