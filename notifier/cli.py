"""The ``notifier`` command: mint tokens, check the configuration, run the server."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from pathlib import Path

from .auth import TokenRequest, mint_token
from .config import Config, ConfigError


def _config() -> Config:
    try:
        return Config.from_env()
    except ConfigError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_token(args: argparse.Namespace) -> int:
    config = _config()
    if config.jwt_algorithm not in ("HS256", "HS384", "HS512") and not config.jwt_private_key:
        print("notifier: minting RS/ES tokens needs NOTIFIER_JWT_PRIVATE_KEY_FILE", file=sys.stderr)
        return 2
    if config.dev_page:  # the generated local secret (notifier/config/)
        print("notifier: development mode: signed with the local dev secret", file=sys.stderr)
    subject = args.publisher or args.subject
    if not subject:
        print("notifier: give a user id, or --publisher NAME", file=sys.stderr)
        return 2
    wanted = TokenRequest(
        subject=subject,
        publisher=bool(args.publisher),
        topics=args.topic or [],
        users=args.user if args.user else None,
        broadcast=args.broadcast,
        expires=timedelta(seconds=args.expires),
    )
    print(mint_token(config, wanted))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    print(_config())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run gunicorn with the bundled gunicorn.conf.py (the README's run command)."""
    _config()
    # gunicorn.conf.py and wsgi.py live at the top of a checkout (and in the
    # image's working directory), not inside the installed package.
    candidates = [Path.cwd(), Path(__file__).resolve().parent.parent]
    root = next((path for path in candidates if (path / "gunicorn.conf.py").exists() and (path / "wsgi.py").exists()), None)
    if root is None:
        print("notifier: run from the directory holding gunicorn.conf.py and wsgi.py (a checkout, or /app in the image)",
              file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "gunicorn", "-c", str(root / "gunicorn.conf.py"), "--chdir", str(root), "wsgi:app"]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notifier", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    token = commands.add_parser("token", help="mint a token from the configured secret")
    token.add_argument("subject", nargs="?", help="the user id (the token's sub)")
    token.add_argument("--publisher", metavar="NAME", help="mint a publisher credential for service NAME")
    token.add_argument("--topic", action="append", metavar="PATTERN",
                       help="grant a topic pattern such as 'orders:*' (repeatable)")
    token.add_argument("--user", action="append", metavar="PATTERN",
                       help="publisher scope: users it may reach (repeatable; default all)")
    token.add_argument("--broadcast", action=argparse.BooleanOptionalAction, default=None,
                       help="publisher scope: may it broadcast")
    token.add_argument("--expires", type=int, default=3600, metavar="SECONDS", help="lifetime (default 3600)")
    token.set_defaults(func=cmd_token)

    check = commands.add_parser("check-config", help="validate NOTIFIER_* settings and print them (secrets masked)")
    check.set_defaults(func=cmd_check)

    run = commands.add_parser("run", help="run the service under gunicorn with gunicorn.conf.py")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
