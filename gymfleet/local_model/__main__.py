"""``python -m gymfleet.local_model prepare``: convert the default weights once, before the first start.

``python -m gymfleet.local_model generate "What is 2 + 3?"``: one greedy answer, to check the install.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from gymfleet.local_model._chat import render_chat
from gymfleet.local_model._engine import SamplingParams
from gymfleet.local_model._runtime import LocalLM
from gymfleet.local_model._weights import find_gguf, prepare_weights
from gymfleet.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gymfleet.local_model", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="convert the GGUF weights to the safetensors cache (once)")
    prep.add_argument("--gguf-path", default=None)
    prep.add_argument("--cache-dir", default=None)
    gen = sub.add_parser("generate", help="answer one prompt greedily")
    gen.add_argument("prompt")
    gen.add_argument("--max-tokens", type=int, default=48)
    gen.add_argument("--gguf-path", default=None)
    gen.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    configure_logging()
    if args.command == "prepare":
        directory = prepare_weights(find_gguf(args.gguf_path), args.cache_dir)
        sys.stdout.write(f"{directory}\n")
        return 0
    lm = LocalLM.load(gguf_path=args.gguf_path, cache_dir=args.cache_dir)
    try:
        prompt = lm.encode_pieces(render_chat([{"role": "user", "content": args.prompt}]))
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0, stop_token_ids=lm.stop_token_ids)
        result = asyncio.run(lm.engine.generate(prompt, params, timeout_s=600.0))
        sys.stdout.write(lm.decode(result.token_ids) + "\n")
    finally:
        lm.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
