"""`dcl storage migrate --to s3://BUCKET/PREFIX`: copy this machine's file store into a bucket
(service/control/migrate.py); run it where the API's DCL_ settings are, then set DCL_STORAGE_URL."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("storage", help="the service's storage: copy a file store into a bucket")
    commands = p.add_subparsers(dest="storage_command", required=True)
    m = commands.add_parser("migrate", help="copy datasets, artifacts and checkpoints into s3://BUCKET/PREFIX "
                                            "(resumable, checked by sha256)")
    m.add_argument("--to", required=True, help="s3://BUCKET/PREFIX (credentials: the standard AWS variables)")
    m.add_argument("--endpoint-url", default=None, help="the S3 endpoint (default DCL_S3_ENDPOINT_URL; MinIO...)")
    m.set_defaults(func=cmd_migrate)


def cmd_migrate(args) -> int:
    from service.control.migrate import migrate
    from service.control.objectstore import StoreUnavailable
    from service.control.settings import get_settings

    settings = get_settings()
    try:
        report = migrate(settings, args.to, endpoint_url=args.endpoint_url or settings.s3_endpoint_url)
    except (ValueError, StoreUnavailable) as exc:
        print(f"dcl storage migrate: {exc}", file=sys.stderr)
        return 2
    print(f"copied {report.copied} objects ({report.bytes} bytes), {report.skipped} already there")
    for problem in report.problems:
        print(f"not copied: {problem}", file=sys.stderr)
    if report.problems:
        return 1
    print(f"done: set DCL_STORAGE_URL={args.to} for the API and the workers")
    return 0
