"""The one configuration file: where the venue is and where this machine keeps its files.

``$KEYLINE_CONFIG``, else ``~/.config/keyline/client.toml`` (``--config`` overrides both)::

    api_url = "https://rfq.venue.example:8443"   # the terminator: the RFQ API and EST
    ca_file = "/etc/keyline/venue-root.pem"      # the venue's root, to trust its server
    trader_id = "nw-fay"
    key_file = "~/.keyline/key.pem"              # written 0600, never sent anywhere
    cert_file = "~/.keyline/cert.pem"
    chain_file = "~/.keyline/chain.pem"          # the issuing CA and the root (EST cacerts)
    renew_before = 0.33                          # renew when this share of the lifetime is left
    reload_command = "systemctl reload my-gateway"   # optional, run after a renewal

Relative paths are taken from the file's directory.
"""

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    pass


DEFAULT = Path("~/.config/keyline/client.toml")
REQUIRED = ("api_url", "ca_file", "trader_id", "key_file", "cert_file", "chain_file")


@dataclass(frozen=True)
class Config:
    path: Path
    api_url: str
    ca_file: Path
    trader_id: str
    key_file: Path
    cert_file: Path
    chain_file: Path
    renew_before: float = 0.33
    reload_command: str = ""

    @property
    def pending_key_file(self) -> Path:
        """A key made for a request still being answered (kept so that a retry sends the same
        request, as EST asks)."""
        return self.key_file.with_name(self.key_file.name + ".pending")


def config_path(given: str | None) -> Path:
    return Path(given or os.environ.get("KEYLINE_CONFIG") or DEFAULT).expanduser()


def load(given: str | None = None) -> Config:
    path = config_path(given)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no configuration at {path} (see keyline --help)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    missing = [name for name in REQUIRED if not data.get(name)]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}")
    unknown = set(data) - set(REQUIRED) - {"renew_before", "reload_command"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")

    def where(name: str) -> Path:
        value = Path(str(data[name])).expanduser()
        return value if value.is_absolute() else path.parent / value

    renew_before = float(data.get("renew_before", 0.33))
    if not 0 < renew_before <= 1:
        raise ConfigError(f"{path}: renew_before must be in (0, 1], not {renew_before}")
    return Config(
        path=path,
        api_url=str(data["api_url"]).rstrip("/"),
        ca_file=where("ca_file"),
        trader_id=str(data["trader_id"]),
        key_file=where("key_file"),
        cert_file=where("cert_file"),
        chain_file=where("chain_file"),
        renew_before=renew_before,
        reload_command=str(data.get("reload_command", "")),
    )
