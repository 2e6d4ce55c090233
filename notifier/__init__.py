"""notifier: real-time notifications over Server-Sent Events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from flask import Flask

    from .config import Config

__all__ = ["Identity", "Notifier", "Publisher", "__version__", "create_app"]


def create_app(config: Config | None = None) -> Flask:
    """The standalone service. ``config`` defaults to ``Config.from_env()``
    (raises ConfigError listing every problem)."""
    from flask import Flask

    from .api.publish import LeanPublish
    from .config import Config
    from .extension import Notifier
    from .logs import configure_logging

    config = config or Config.from_env()
    configure_logging(config.log_level)
    app = Flask("notifier", static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep documented field order
    state = Notifier().init_app(app, config, standalone=True)
    app.wsgi_app = LeanPublish(app, state, app.wsgi_app)  # type: ignore[method-assign]
    return app


def __getattr__(name: str) -> Any:
    # Lazy, so ``import notifier`` stays free of side effects and heavy imports.
    if name == "Notifier":
        from .extension import Notifier

        return Notifier
    if name == "Identity":
        from .identity import Identity

        return Identity
    if name == "Publisher":
        from .publisher import Publisher

        return Publisher
    raise AttributeError(name)
