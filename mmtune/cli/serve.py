"""`mmtune serve MODEL` (OpenAI-compatible API, optional web UI) and `mmtune webui MODEL`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from mmtune.cli.common import add_parser
from mmtune.errors import MmtuneError

log = logging.getLogger(__name__)

EPILOG = """\
examples:
  mmtune serve merged                                    # http://127.0.0.1:8000/v1
  mmtune serve Qwen/Qwen2.5-0.5B-Instruct --adapter hf_adapter --ui
  mmtune serve merged --host 0.0.0.0 --port 8080 --api-key "$KEY" --max-concurrency 16
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "merged", "messages": [{"role": "user", "content": "who are you?"}]}'
The API key can also come from the MMTUNE_API_KEY environment variable (kept out of `ps`).
"""

WEBUI_EPILOG = """\
examples:
  mmtune webui merged                                    # then open http://127.0.0.1:7860/
  mmtune webui Qwen/Qwen2.5-0.5B-Instruct --adapter hf_adapter --port 8080
Same as `mmtune serve MODEL --ui --port 7860`: the page talks to the server's OpenAI API.
"""


def _add_options(p, default_port: int) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory or hub id (merged or base model)")
    p.add_argument("--adapter", help="peft adapter directory to apply on MODEL")
    p.add_argument("--prompt-template", help="template name (default: the one stored with the model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=default_port, help=f"port (default: {default_port})")
    p.add_argument("--api-key", default=os.environ.get("MMTUNE_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 requests (default: $MMTUNE_API_KEY, else none)")
    p.add_argument("--max-concurrency", type=int, default=8, metavar="N",
                   help="requests waiting or generating at once; more are answered 429 (default: 8)")
    p.add_argument("--batching", default="auto", choices=["auto", "off"],
                   help="auto: generate for all requests in progress together (transformers' continuous batching) "
                        "where the model allows it, else one at a time; off: always one at a time (default: auto)")
    p.add_argument("--served-model-name", help="model id in the API (default: the adapter's or model's directory name)")
    p.add_argument("--max-tokens", type=int, default=512, help="answer length when a request sets none (default: 512)")
    p.add_argument("--max-image-mb", type=float, default=20.0, help="largest accepted image (default: 20)")
    p.add_argument("--max-image-mp", type=float, default=50.0,
                   help="most pixels per image, in megapixels, checked before decoding (default: 50)")
    p.add_argument("--max-images", type=int, default=8, help="most images in one request (default: 8)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let browser pages on ORIGIN (e.g. http://localhost:3000) call the API (CORS; off by default; "
                        "repeatable)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the model")


def register(sub) -> None:
    p = add_parser(sub, "serve", "serve a model over an OpenAI-compatible HTTP API", EPILOG)
    _add_options(p, 8000)
    p.add_argument("--ui", action="store_true", help="also serve the web chat page at /")
    p.set_defaults(func=run, ui=False)

    w = add_parser(sub, "webui", "chat with a model in the browser (serve --ui)", WEBUI_EPILOG)
    _add_options(w, 7860)
    w.set_defaults(func=run, ui=True)


def served_name(model: str, adapter: str | None) -> str:
    return Path((adapter or model).rstrip("/")).name or model


def check_port_free(host: str, port: int) -> None:
    """Bind the address once and let it go: a port in use is one line now, not a uvicorn error after
    the model has loaded."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            raise MmtuneError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                              hint="another server uses the port: pick another with --port") from None


def prefer_passive_openmp() -> None:
    """OpenMP helper threads that spin between the many small ops of token-by-token generation take
    the cores the server needs: measured on a shared 2-core CPU, 16 clients x 2 requests took 20-64 s
    with OpenMP's default waiting and 3.5-4 s with OMP_WAIT_POLICY=PASSIVE. Only before torch loads
    OpenMP does this take effect; an OMP_WAIT_POLICY the user set is kept."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(args) -> int:
    prefer_passive_openmp()
    from mmtune.infer.load import load_for_inference
    from mmtune.infer.batching import choose_worker
    from mmtune.infer.server import ServerSettings, allowed_hosts_for, is_loopback, run_server

    if args.max_concurrency < 1:
        raise MmtuneError("--max-concurrency must be at least 1")
    if not is_loopback(args.host) and not args.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach this address can use the model", args.host)
    check_port_free(args.host, args.port)  # before minutes of loading, not after
    loaded = load_for_inference(args.model, adapter=args.adapter, template=args.prompt_template,
                                device=args.device, trust_remote_code=args.trust_remote_code)
    settings = ServerSettings(
        model_id=args.served_model_name or served_name(args.model, args.adapter), api_key=args.api_key,
        max_concurrency=args.max_concurrency, default_max_tokens=args.max_tokens,
        max_image_bytes=int(args.max_image_mb * 2**20), max_image_pixels=int(args.max_image_mp * 1e6),
        max_images=args.max_images, ui=args.ui, allowed_hosts=allowed_hosts_for(args.host),
        allow_origins=tuple(args.allow_origin), batching=args.batching,
    )
    worker = choose_worker(loaded, settings.max_concurrency, args.batching)
    print(f"generation: {worker.how}", flush=True)
    base = f"http://{args.host}:{args.port}"
    print(f"serving {settings.model_id!r} at {base}/v1" + (f" — chat page at {base}/" if args.ui else ""), flush=True)
    run_server(loaded, settings, args.host, args.port, worker)
    return 0
