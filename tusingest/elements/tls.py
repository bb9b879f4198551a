"""The TLS client context of every connection to storage elements and the Admin Module."""

from __future__ import annotations

import ssl

from tusingest.errors import ConfigError
from tusingest.settings.storage import TlsSettings


def client_context(config: TlsSettings) -> ssl.SSLContext:
    """Certificates and hostnames verified (against STORAGE_ELEMENT_CA_FILE, else the system
    store), at least STORAGE_ELEMENT_TLS_MIN_VERSION, with the client certificate when one is
    configured. A file that holds no usable PEM is a ConfigError naming its variable."""
    try:
        context = ssl.create_default_context(
            cafile=None if config.ca_file is None else str(config.ca_file)
        )
    except ssl.SSLError as exc:
        raise ConfigError(
            "STORAGE_ELEMENT_CA_FILE", f"{config.ca_file} holds no usable PEM certificate: {exc}"
        ) from None
    context.minimum_version = config.min_version
    if config.client_cert_file is not None and config.client_key_file is not None:
        try:
            context.load_cert_chain(
                config.client_cert_file, config.client_key_file, password=_no_password
            )
        except ssl.SSLError as exc:
            raise ConfigError(
                "STORAGE_ELEMENT_CLIENT_CERT_FILE",
                f"{config.client_cert_file} with the key {config.client_key_file} is not a "
                f"usable client certificate (PEM certificate and its unencrypted key): {exc}",
            ) from None
    return context


def _no_password() -> bytes:
    """An encrypted key would make OpenSSL prompt on the terminal: refused instead."""
    raise ConfigError("STORAGE_ELEMENT_CLIENT_KEY_FILE", "an encrypted key is not supported")
