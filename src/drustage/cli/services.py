"""Service commands: the web page and API, and the DICOM node."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from drustage.cli.common import add_device_argument


def _default_state_dir() -> Path:
    import os

    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "drustage"


def _cmd_listen(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from drustage.inference.bundle import load_bundle
    from drustage.pacs.node import DicomNode, ListenConfig
    from drustage.pipeline import Predictor

    # a long-running node: every line with its time
    logging.basicConfig(level=logging.WARNING, force=True,
                        format="%(asctime)s drustage listen %(levelname)s %(message)s")
    config = ListenConfig(spool=Path(args.spool), destination=args.send_to, ae_title=args.ae_title, host=args.host,
                          port=args.port, max_attempts=args.max_attempts).checked()
    thresholds = {} if args.threshold is None else {"detection_threshold": args.threshold}
    node = DicomNode(config, Predictor(load_bundle(args.model), device=args.device, **thresholds))
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    node.start()
    print(f"drustage: listening as {config.ae_title} on {config.host}:{config.port}; results to {node.destination}",
          flush=True)
    stopped.wait()
    node.stop()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import os
    import secrets

    import uvicorn

    from drustage.service.app import ServiceConfig, create_app
    from drustage.service.guard import LOOPBACK_NAMES, is_loopback

    token = os.environ.get("DRUSTAGE_TOKEN") or None
    hosts = (*LOOPBACK_NAMES, *(h.lower() for h in args.allow_host or ()))
    if not is_loopback(args.host):
        token = token or secrets.token_urlsafe(24)
        print(f"drustage: warning: listening on {args.host}, beyond this machine: every request needs the access "
              "token (set DRUSTAGE_TOKEN to choose it); put TLS in front of it (a reverse proxy) on a network",
              file=sys.stderr)
        if not args.allow_host:
            print("drustage: warning: no --allow-host given: only requests naming localhost are answered",
                  file=sys.stderr)
    config = ServiceConfig(model=Path(args.model), label_dir=Path(args.label_dir) if args.label_dir else None,
                           max_upload_bytes=args.max_upload_mb << 20, detection_threshold=args.threshold,
                           review_detection_score=args.review_detection_score, inference_slots=args.slots,
                           runtime=args.runtime, allowed_hosts=hosts, token=token, device=args.device,
                           state_dir=None if args.state_dir == "none" else Path(args.state_dir))
    app = create_app(config)
    query = f"?token={token}" if token else ""
    print(f"drustage: serving {args.model} on http://{args.host}:{args.port}/{query} (API docs at /docs)")
    # no access log: request paths carry result and image ids
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info", access_log=False)
    return 0


def add_commands(sub) -> None:
    """This group's subcommands on ``sub`` (the configs are plain dataclasses, no torch: their
    defaults are the options' defaults)."""
    from drustage.pacs.node import ListenConfig
    from drustage.thresholds import DETECTION_THRESHOLD
    from drustage.thresholds import REVIEW_DETECTION_SCORE

    listen = sub.add_parser("listen", help="DICOM node: read the radiographs a PACS sends, send SR and SC back")
    listen.add_argument("--model", required=True, help="bundle directory or .zip")
    listen.add_argument("--spool", required=True, help="folder for received images, results and the job queue")
    listen.add_argument("--send-to", required=True, metavar="AE@HOST:PORT|URL",
                        help="where SR and SC go: a DICOM node, or a DICOMweb base URL (STOW-RS)")
    listen.add_argument("--ae-title", default=ListenConfig.ae_title, help="this node's AE title")
    listen.add_argument("--host", default=ListenConfig.host, help="address to listen on")
    listen.add_argument("--port", type=int, default=ListenConfig.port)
    listen.add_argument("--max-attempts", type=int, default=ListenConfig.max_attempts,
                        help="sends tried per image before it ends as an error")
    listen.add_argument("--threshold", type=float, help="detection score below which a bone is missing "
                        "(default: the predictor's)")
    add_device_argument(listen)
    listen.add_argument("--quiet", action="store_true", help="log warnings only")
    listen.set_defaults(handler=_cmd_listen)

    serve = sub.add_parser("serve", help="web page and REST API for predictions, and labelling of a folder")
    serve.add_argument("--model", required=True, help="bundle directory or .zip")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--allow-host", action="append", metavar="NAME",
                       help="a host name the page is reached by, beside localhost (repeat for more)")
    serve.add_argument("--label-dir", help="folder of radiographs (or a drustage dataset) to label in the page")
    serve.add_argument("--state-dir", default=str(_default_state_dir()),
                       help="past results (SQLite) and the audit log; 'none' keeps results in memory only "
                            "(default: %(default)s)")
    serve.add_argument("--max-upload-mb", type=int, default=64, help="largest upload accepted")
    serve.add_argument("--threshold", type=float, default=DETECTION_THRESHOLD,
                       help="detection score below which a bone is missing (default %(default)s)")
    serve.add_argument("--review-detection-score", type=float,
                       help=f"flag found boxes scoring below this for review (default {REVIEW_DETECTION_SCORE})")
    serve.add_argument("--slots", type=int, default=1, help="radiographs run through the models at once")
    serve.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                       help="torch, or onnx (after drustage export-onnx)")
    add_device_argument(serve)
    serve.add_argument("--quiet", action="store_true", help="log warnings only")
    serve.set_defaults(handler=_cmd_serve)
