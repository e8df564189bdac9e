"""Settings as data: every TOML file the product reads lives in this folder.

:func:`load_toml` is the one reader of TOML in the product: it returns the parsed table or
raises :class:`ConfigError` naming the file (or source) and what is wrong. Each concept checks
its own keys next to the code that uses them (``load_measures``, ``load_payment_settings`` ...).
"""

import tomllib
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = CONFIG_DIR.parent.parent


class ConfigError(ValueError):
    """A settings file that cannot be read or does not follow its schema."""


def config_path(name: str) -> Path:
    """The shipped settings file ``name`` (for example ``"measures.toml"``)."""
    return CONFIG_DIR / name


def parse_toml(text: str, source: str = "settings", error: type[Exception] = ConfigError) -> dict:
    """Parse TOML text; a syntax error becomes ``error`` (a :class:`ConfigError` by default) naming ``source``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML: {exc}") from exc


def load_toml(path: Path | str) -> dict:
    """Read and parse one TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    return parse_toml(text, source=str(path))
