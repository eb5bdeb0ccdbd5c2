"""`dcl models`, `dcl register`, `dcl alias`: the model registry from the command line (and
`dcl download model:NAME@ALIAS --out DIR`, in service/cli.py)."""

from __future__ import annotations

import json
import sys


def register(subparsers, client_parser) -> None:
    p = client_parser("models", "list your registered models, or one model's versions")
    p.add_argument("name", nargs="?", help="a model: show its versions and aliases")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = client_parser("register", "register a succeeded pretrain job's encoder as a model's next version")
    p.add_argument("name", help="the model (made on first use): letters, digits, _ . -")
    p.add_argument("job_id")
    p.add_argument("--alias", default=None, help="also point this alias (production) at the new version")
    p.set_defaults(func=cmd_register)

    p = client_parser("alias", "point a model's alias at a version (or --delete it)")
    p.add_argument("name")
    p.add_argument("alias", help="production, staging, ...: starts with a letter")
    p.add_argument("version", nargs="?", type=int, help="the version it points at from now on")
    p.add_argument("--delete", action="store_true", help="delete the alias")
    p.set_defaults(func=cmd_alias)


def _client(args):
    from service.client import Client

    return Client(args.url, args.key)


def version_line(v: dict) -> str:
    """"v2  job_...  linear_top1 91.2 %  sha256 3f2a9c0d1e2b…  [production]"."""
    scores = "  ".join(f"{name} {100 * s:.1f} %" for name, s in (v.get("scores") or {}).items()
                       if isinstance(s, (int, float)))
    sha = f"sha256 {v['sha256'][:12]}…" if v.get("sha256") else "no encoder file"
    aliases = f"  [{', '.join(v['aliases'])}]" if v.get("aliases") else ""
    return f"v{v['version']}  {v['job']}  {scores or 'no scores'}  {sha}  created {v['created_at']}{aliases}"


def cmd_models(args) -> int:
    with _client(args) as client:
        found = client.model(args.name) if args.name else client.models(limit=500)
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if args.name:
        aliases = ", ".join(f"{a}=v{n}" for a, n in found["aliases"].items()) or "no aliases"
        print(f"{found['name']}: {found['version_count']} version(s), {aliases}")
        for version in found["versions"]:
            print("  " + version_line(version))
        return 0
    for model in found["items"]:
        aliases = ", ".join(f"{a}=v{n}" for a, n in model["aliases"].items())
        latest = f"latest v{model['latest_version']}" if model["latest_version"] else "no versions"
        print(f"{model['name']}  {latest}  {model['version_count']} version(s)" + (f"  {aliases}" if aliases else ""))
    print(f"{len(found['items'])} of {found['total']} model(s)", file=sys.stderr)
    return 0


def cmd_register(args) -> int:
    with _client(args) as client:
        version = client.register(args.name, args.job_id)
        print(f"{version['name']} version {version['version']} (job {version['job']}, {version['source']})")
        if args.alias:
            client.set_alias(args.name, args.alias, version["version"])
            print(f"{args.name}@{args.alias} -> version {version['version']}")
    return 0


def cmd_alias(args) -> int:
    from dcl_core.errors import UserError

    with _client(args) as client:
        if args.delete:
            client.delete_alias(args.name, args.alias)
            print(f"{args.name}@{args.alias} deleted")
            return 0
        if args.version is None:
            raise UserError("give the version the alias points at (dcl alias NAME ALIAS VERSION), or --delete")
        client.set_alias(args.name, args.alias, args.version)
    print(f"{args.name}@{args.alias} -> version {args.version}")
    return 0
