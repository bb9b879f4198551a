"""Settings of authentication: whether tokens are required and how they are verified."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tusingest.settings.env import Env

ALGORITHMS = ("RS256", "RS384", "RS512")


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool  # AUTH_ENABLED
    algorithm: str  # AUTH_ALGORITHM
    public_key_path: Path  # AUTH_PUBLIC_KEY_PATH
    # The dev key pair lives in the data dir; only used when the public key is the dev one.
    dev_private_key_path: Path

    @property
    def uses_dev_keys(self) -> bool:
        return self.public_key_path == self.dev_private_key_path.with_name("jwt_public.pem")


def parse_auth(env: Env, data_dir: Path) -> AuthSettings:
    keys = data_dir / "keys"
    return AuthSettings(
        enabled=env.flag("AUTH_ENABLED", True),
        algorithm=env.choice("AUTH_ALGORITHM", "RS256", ALGORITHMS, fold=str.upper),
        public_key_path=env.path("AUTH_PUBLIC_KEY_PATH", keys / "jwt_public.pem"),
        dev_private_key_path=keys / "jwt_private.pem",
    )
