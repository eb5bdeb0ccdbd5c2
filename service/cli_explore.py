"""`dcl neighbours JOB ITEM` and `dcl search JOB IMAGE`: an embed job's nearest images, as a table
(or JSON), from the service's neighbours and search endpoints."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers, client_parser) -> None:
    p = client_parser("neighbours", "an embed job's images nearest to one of its items")
    p.add_argument("job_id", help="a succeeded embed job")
    p.add_argument("item", type=int, help="the item (its index in the job's dataset order)")
    p.add_argument("--k", type=int, default=10, help="how many (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_neighbours)

    p = client_parser("search", "an embed job's images nearest to an image file, embedded by the same encoder")
    p.add_argument("job_id", help="a succeeded embed job")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--k", type=int, default=10, help="how many (default 10)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)


def table(found: dict, classes: list[str] | None) -> str:
    def name(label):
        if label is None:
            return "-"
        return f"{label} ({classes[label]})" if classes and 0 <= label < len(classes) else str(label)

    lines = [f"{'rank':>4}  {'item':>8}  {'score':>7}  label"]
    for rank, row in enumerate(found["items"], 1):
        lines.append(f"{rank:>4}  {row['item']:>8}  {row['score']:>7.4f}  {name(row['label'])}")
    return "\n".join(lines)


def _show(client, args, found: dict, head: str) -> int:
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    classes = (client.job(args.job_id).get("result") or {}).get("classes")
    print(head)
    print(table(found, classes))
    return 0


def cmd_neighbours(args) -> int:
    from service.cli import _client

    with _client(args) as client:
        found = client.neighbours(args.job_id, args.item, args.k)
        label = found["label"]
        return _show(client, args, found, f"item {found['item']}" + (f", label {label}" if label is not None else ""))


def cmd_search(args) -> int:
    from dcl_core.errors import UserError
    from service.cli import _client

    path = Path(args.image)
    if not path.is_file():
        raise UserError(f"{args.image}: no such file")
    with _client(args) as client:
        found = client.search(args.job_id, path, args.k)
        query = found["query"]
        return _show(client, args, found, f"{path.name} ({query['width']}x{query['height']})")
