"""Development key pair in the data dir, and minting tokens signed with it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tusingest.domain import Role


def ensure_dev_keys(private_path: Path) -> Path:
    """Create the RSA key pair next to `private_path` if missing; returns the public key path."""
    public_path = private_path.with_name("jwt_public.pem")
    if private_path.exists() and public_path.exists():
        return public_path
    private_path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def mint_token(
    private_path: Path,
    *,
    sub: str,
    name: str | None = None,
    role: Role = Role.USER,
    ttl_seconds: int = 3600,
    algorithm: str = "RS256",
) -> str:
    now = int(time.time())
    claims = {
        "sub": sub,
        "name": name or sub,
        "role": role.value,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, private_path.read_bytes(), algorithm=algorithm)
