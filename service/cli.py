"""`dcl serve`, and the client commands `dcl upload/submit/status/wait/download/jobs/cancel/retry/
delete/artifacts/datasets/metrics/tag/note`.

Registered through the `dcl.commands` entry-point group; imports nothing heavy until a
command runs (so `dcl train` does not pay for FastAPI, and `dcl jobs` starts in a fraction of a
second: not even the job types' models are imported to list their names).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.cli_output import children_line, describe, jobs_table, number, size, summary_line, table  # noqa: F401


def job_type_names() -> list[str]:
    """The job types, from the module names of `dcl_core.jobs` (one module a type), without
    importing them (tests check this equals `JOB_TYPES`)."""
    import importlib.util
    import pkgutil

    spec = importlib.util.find_spec("dcl_core.jobs")
    return sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations) if m.name != "base")

SORTS = {"newest": "-created", "oldest": "created", "best": "-score", "worst": "score"}


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run the HTTP API (and, embedded, a worker)")
    p.add_argument("--host", default=None, help="bind address (default DCL_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default DCL_PORT, 8000)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--embedded", dest="embedded", action="store_true", default=None,
                       help="also run one worker in a subprocess (default with the SQLite broker)")
    group.add_argument("--no-embedded", dest="embedded", action="store_false",
                       help="API only (workers run elsewhere: `dcl worker`)")
    p.add_argument("--log-level", default="info", help="uvicorn log level")
    p.set_defaults(func=cmd_serve)

    def client_parser(name: str, help: str) -> argparse.ArgumentParser:
        sp = subparsers.add_parser(name, help=help)
        sp.add_argument("--url", default=None, help="the service (default DCL_URL, else http://127.0.0.1:DCL_PORT, "
                                                    "else http://127.0.0.1:8000)")
        sp.add_argument("--key", default=None, help="API key (default DCL_API_KEY)")
        return sp

    p = client_parser("upload", "upload a dataset (.zip/.tar/.tar.gz of images, or .npz); prints its id")
    p.add_argument("file")
    p.add_argument("--name", default=None)
    p.set_defaults(func=cmd_upload)

    p = client_parser("submit", "submit a job from a JSON/YAML file; prints the job id")
    p.add_argument("config", help="a job ({\"type\": ..., ...}) or a bare TrainConfig (then --type pretrain)")
    p.add_argument("--type", choices=job_type_names(), default="pretrain", help="job type when the file has none")
    p.add_argument("--wait", action="store_true", help="then follow it like `dcl wait`")
    p.add_argument("--name", default=None, help="a name for the job (1-100 characters)")
    p.add_argument("--tag", action="append", default=None, help="a tag (repeatable); find it with `dcl jobs --tag`")
    p.set_defaults(func=cmd_submit)

    p = client_parser("status", "show a job")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="the full job as JSON")
    p.set_defaults(func=cmd_status)

    p = client_parser("wait", "follow a job's progress until it ends (exit 0 if it succeeded)")
    p.add_argument("job_id")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_wait)

    p = client_parser("download", "download a job's artifacts (checked against their sha256)")
    p.add_argument("job_id", help="a job, or a registered model's version: model:NAME@ALIAS, model:NAME/N")
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--name", action="append", default=None, help="only this artifact (repeatable)")
    p.set_defaults(func=cmd_download)

    p = client_parser("jobs", "list your jobs")
    p.add_argument("--status", default=None)
    p.add_argument("--type", default=None, choices=job_type_names())
    p.add_argument("--parent", default=None, help="only the children of this job (a sweep's members)")
    p.add_argument("--tag", action="append", default=None, help="only jobs with this tag (repeatable: all of them)")
    p.add_argument("--search", default=None, help="only jobs whose name holds this text")
    p.add_argument("--method", default=None, help="only jobs training with this method")
    p.add_argument("--encoder", default=None, help="only jobs with this encoder (resnet18), or probing this job")
    p.add_argument("--dataset", default=None, help="only jobs reading this data (dataset:ID, builtin:digits)")
    p.add_argument("--sort", default=None, choices=[*SORTS, *SORTS.values()],
                   help="order: newest (the default), oldest, best or worst score (or the API's -created, "
                        "created, -score, score, written --sort=-score)")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs)

    p = client_parser("tag", "add tags to a job (or remove them with --remove); prints its tags")
    p.add_argument("job_id")
    p.add_argument("tags", nargs="*", help="tags to add: 1-64 of A-Z a-z 0-9 _ . : -")
    p.add_argument("--remove", action="append", default=[], metavar="TAG", help="a tag to remove (repeatable)")
    p.set_defaults(func=cmd_tag)

    p = client_parser("note", "set a job's notes (free text, up to 10 kB); prints them")
    p.add_argument("job_id")
    p.add_argument("text", nargs="?", default=None, help="the notes; - reads them from standard input")
    p.add_argument("--clear", action="store_true", help="remove the job's notes")
    p.set_defaults(func=cmd_note)

    p = client_parser("cancel", "cancel a job (a sweep: with its members)")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_cancel)

    p = client_parser("retry", "queue a failed or cancelled job again, from its last checkpoint "
                               "(a sweep: its failed and cancelled members)")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_retry)

    p = client_parser("delete", "delete a finished job with its metrics and files (a sweep: with its members), "
                                "or an uploaded dataset (ds_...)")
    p.add_argument("id", help="a job id (job_...) or a dataset id (ds_...)")
    p.set_defaults(func=cmd_delete)

    p = client_parser("artifacts", "list a job's files: name, size, sha256")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_artifacts)

    p = client_parser("datasets", "list your uploaded datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    p = client_parser("metrics", "print a job's metric series (one row per logged step)")
    p.add_argument("job_id")
    p.add_argument("--json", action="store_true", help="JSON lines, one row each")
    p.set_defaults(func=cmd_metrics)

    from service import cli_explore, cli_models, cli_storage

    cli_explore.register(subparsers, client_parser)
    cli_models.register(subparsers, client_parser)
    cli_storage.register(subparsers)


# ---- serve ------------------------------------------------------------------------------


def cmd_serve(args) -> int:
    from dcl_core.errors import UserError
    from service.serve import serve
    from service.control.settings import get_settings, is_loopback

    settings = get_settings()
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    if not settings.auth_enabled and not is_loopback(host):
        raise UserError(f"refusing to listen on {host} without API keys: anyone who can reach it could use it. "
                        "Set DCL_API_KEYS (or DCL_API_KEYS_FILE), or listen on 127.0.0.1")
    embedded = settings.embedded_broker if args.embedded is None else args.embedded
    settings.ensure_dirs()
    banner = f"dcl: API on http://{host}:{port} (docs: /docs); data in {settings.data_dir}"
    if port != 8000:  # the other `dcl` commands look on 8000 unless told
        local = host if is_loopback(host) else "127.0.0.1"
        banner += f"\ndcl: in another shell, for the other dcl commands: export DCL_URL=http://{local}:{port}"
    serve(host, port, args.log_level, embedded, banner=banner, data_dir=settings.data_dir)
    return 0


# ---- client commands --------------------------------------------------------------------


def _client(args):
    from service.client import Client

    return Client(args.url, args.key)


def job_body(data: dict, job_type: str) -> dict:
    """A file holding a whole job request is sent as it is; a bare config is wrapped."""
    if "type" in data:
        return data
    if job_type == "pretrain":
        return {"type": "pretrain", "config": data}
    return {"type": job_type, **data}


def cmd_upload(args) -> int:
    from dcl_core.errors import UserError

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    with _client(args) as client:
        dataset = client.upload(path, args.name)
    summary = dataset["summary"]
    print(dataset["id"])
    print(f"{summary.get('num_images')} images, classes: {summary.get('classes')}", file=sys.stderr)
    return 0


def cmd_submit(args) -> int:
    from dcl_core.cli import read_config_file

    body = job_body(read_config_file(args.config), args.type)
    if args.name is not None:
        body["name"] = args.name
    if args.tag:
        body["tags"] = list(body.get("tags") or []) + args.tag
    with _client(args) as client:
        job = client.submit(body)
        print(job["id"], flush=True)
        if args.wait:
            return follow(client, job["id"], quiet=False)
    return 0


def cmd_status(args) -> int:
    with _client(args) as client:
        job = client.job(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2))
        return 0
    print(describe(job))
    return 0


def progress_bar(job_id: str, progress: dict, file=None):
    """The bar for a job first seen at `progress`: it starts at that step, so the rate and the
    ETA count only steps seen to happen (attached at step 900, those 900 took hours, not a second)."""
    from tqdm import tqdm

    step = min(progress["step"], progress["total_steps"])
    return tqdm(total=progress["total_steps"], initial=step, desc=job_id, unit="step", dynamic_ncols=True,
                file=file or sys.stderr)


def follow(client, job_id: str, quiet: bool) -> int:
    """Follows the event stream with a one-line progress bar; 0 if the job succeeded."""
    bar = None
    final = None
    try:
        for event in client.events(job_id):
            if event.event == "status" and isinstance(event.data, dict) and event.data.get("children"):
                # A sweep: the bar counts its members done; the line says what each is doing.
                children = event.data["children"]
                if bar is None and not quiet:
                    from tqdm import tqdm

                    bar = tqdm(total=children["total"], desc=job_id, unit="job", dynamic_ncols=True, file=sys.stderr)
                if bar is not None:
                    bar.n = children["succeeded"] + children["failed"] + children["cancelled"]
                    bar.set_postfix_str(children_line(children).partition(": ")[2], refresh=True)
            elif event.event == "status" and isinstance(event.data, dict):
                total = event.data["progress"].get("total_steps")
                if bar is None and total and not quiet:
                    bar = progress_bar(job_id, event.data["progress"])
                if bar is not None:
                    bar.n = min(event.data["progress"]["step"], bar.total)
                    bar.set_postfix_str(event.data["status"], refresh=True)
            elif event.event == "metrics" and isinstance(event.data, dict) and bar is not None and bar.unit == "step":
                bar.n = min(int(event.data.get("step", bar.n)), bar.total)
                loss = event.data.get("loss")
                bar.set_postfix_str(f"loss {loss:.4f}" if isinstance(loss, (int, float)) else "", refresh=True)
            elif event.event == "end":
                final = event.data
    finally:
        if bar is not None:
            bar.close()
    if not isinstance(final, dict) or "status" not in final:
        print(f"{job_id}: {final}", file=sys.stderr)
        return 1
    print(describe(final))
    return 0 if final["status"] == "succeeded" else 1


def cmd_wait(args) -> int:
    with _client(args) as client:
        return follow(client, args.job_id, args.quiet)


def cmd_download(args) -> int:
    from dcl_core.errors import UserError

    out = Path(args.out)
    with _client(args) as client:
        if args.job_id.startswith("model:"):  # one version, resolved once: its files all match
            args.job_id = client.model_version(args.job_id)["job"]
        artifacts = client.artifacts(args.job_id)
        if args.name:
            missing = set(args.name) - {a["name"] for a in artifacts}
            if missing:
                raise UserError(f"job {args.job_id} has no artifact(s) {sorted(missing)}; it has "
                                f"{[a['name'] for a in artifacts]}")
            artifacts = [a for a in artifacts if a["name"] in args.name]
        if not artifacts:
            raise UserError(f"job {args.job_id} has no artifacts (yet)")
        for artifact in artifacts:
            path = client.download(args.job_id, artifact, out)
            print(f"{path}  {artifact['size']} bytes  sha256 {artifact['sha256']}")
    return 0


def cmd_jobs(args) -> int:
    with _client(args) as client:
        page = client.jobs(status=args.status, type=args.type, limit=args.limit, parent=args.parent,
                           tag=args.tag, q=args.search, method=args.method, encoder=args.encoder,
                           dataset=args.dataset, sort=SORTS.get(args.sort, args.sort))
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    if page["items"]:
        print(jobs_table(page["items"]))
    print(f"{len(page['items'])} of {page['total']} job(s)", file=sys.stderr)
    return 0


def cmd_tag(args) -> int:
    from dcl_core.errors import UserError

    if not args.tags and not args.remove:
        raise UserError("name tags to add (dcl tag JOB best cifar) or --remove TAG")
    with _client(args) as client:
        job = client.update_job(args.job_id, add_tags=args.tags, remove_tags=args.remove)
    print(" ".join(job["tags"]) or "(no tags)")
    return 0


def cmd_note(args) -> int:
    from dcl_core.errors import UserError

    if args.clear == (args.text is not None):
        raise UserError("give the notes (dcl note JOB 'text', or - to read standard input), or --clear")
    text = None if args.clear else sys.stdin.read() if args.text == "-" else args.text
    with _client(args) as client:
        job = client.update_job(args.job_id, notes=text)
    print(job["notes"] if job["notes"] is not None else "(no notes)")
    return 0


def cmd_retry(args) -> int:
    with _client(args) as client:
        job = client.retry(args.job_id)
    print(describe(job).splitlines()[0])
    return 0


def cmd_cancel(args) -> int:
    with _client(args) as client:
        job = client.cancel(args.job_id)
    stopping = ""
    if job["cancel_requested"] and job["status"] == "running":
        from dcl_core.jobs import JOB_TYPES

        kind = JOB_TYPES.get(job["type"])
        stopping = (" (stopping at its next step)" if kind is None or kind.can_stop
                    else f" (a {job['type']} job cannot stop mid-run: it runs to its end)")
    print(f"{job['id']}: {job['status']}{stopping}")
    return 0


def cmd_datasets(args) -> int:
    with _client(args) as client:
        page = client.datasets(limit=500)
    if args.json:
        print(json.dumps(page, indent=2))
        return 0
    rows = [[d["id"], d["name"], number(d["summary"].get("num_images")), str(len(d["summary"].get("classes") or [])),
             size(d["bytes"]), d["created_at"][:19]] for d in page["items"]]
    if rows:
        print(table(["ID", "NAME", "IMAGES", "CLASSES", "SIZE", "CREATED"], rows, right={2, 3, 4}))
    print(f"{len(page['items'])} of {page['total']} dataset(s)", file=sys.stderr)
    return 0


def cmd_metrics(args) -> int:
    """Every row, fetched page by page; a table with one column per metric (first seen first)."""
    rows, since = [], 0
    with _client(args) as client:
        while True:
            page = client.metrics(args.job_id, since=since)
            rows += page["items"]
            if not page["items"] or page["next_since"] == since:
                break
            since = page["next_since"]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    columns = list(dict.fromkeys(key for row in rows for key in row))
    print(table(columns, [[number(row.get(key)) for key in columns] for row in rows], right=set(range(len(columns)))))
    return 0


def cmd_delete(args) -> int:
    from dcl_core.errors import UserError

    kind = "datasets" if args.id.startswith("ds_") else "jobs" if args.id.startswith("job_") else None
    if kind is None:
        raise UserError(f"{args.id!r} is neither a job id (job_...) nor a dataset id (ds_...)")
    with _client(args) as client:
        client.request("DELETE", f"/v1/{kind}/{args.id}")
    print(f"deleted {args.id}")
    return 0


def cmd_artifacts(args) -> int:
    with _client(args) as client:
        items = client.artifacts(args.job_id)
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if items:
        print(table(["NAME", "SIZE", "SHA256"], [[a["name"], size(a["size"]), a["sha256"]] for a in items], right={1}))
    print(f"{len(items)} file(s); `dcl download {args.job_id} --out DIR` fetches them", file=sys.stderr)
    return 0
