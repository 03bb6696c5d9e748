"""The `llmkit` command. Each subcommand parses its flags and calls the library; no logic lives here."""

from __future__ import annotations

import argparse
import sys

from core import LLM, ModelLoadError

CHAT_HELP = "Type a message and press Enter. /reset starts a new conversation; /exit or Ctrl-D quits."


def _load(args: argparse.Namespace) -> LLM:
    try:
        return LLM.load(args.model, dtype=args.dtype)
    except ModelLoadError as error:
        sys.exit(f"llmkit: {error}")


def _sampling(args: argparse.Namespace) -> dict:
    return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed)


def cmd_generate(args: argparse.Namespace) -> None:
    llm = _load(args)
    prompt = [{"role": "user", "content": args.prompt}] if args.chat else args.prompt
    try:
        for delta in llm.stream(prompt, **_sampling(args)):
            print(delta, end="", flush=True)
    except ValueError as error:
        sys.exit(f"llmkit: {error}")
    print()


def cmd_chat(args: argparse.Namespace) -> None:
    llm = _load(args)
    print(f"llmkit chat with {llm.source}\n{CHAT_HELP}")
    messages: list[dict] = []
    while True:
        try:
            text = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            messages = []
            print("(new conversation)")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        reply = ""
        try:
            for delta in llm.stream(messages, **_sampling(args)):
                reply += delta
                print(delta, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        except ValueError as error:  # the conversation outgrew the context
            messages.pop()
            print(f"\nllmkit: {error}. Type /reset to start a new conversation.")
            continue
        print()
        messages.append({"role": "assistant", "content": reply})


def cmd_serve(args: argparse.Namespace) -> None:
    from core.server import serve  # fastapi and uvicorn load only for this command

    serve(_load(args), host=args.host, port=args.port, model_name=args.model_name)


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a .gguf file, a Hugging Face checkpoint directory or model id "
                        "(default: env LLMKIT_MODEL, else the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="float32 matches transformers exactly; float16 decodes ~3x faster on CPU, "
                        "bfloat16 prefills and batches faster (see the README)")


def _add_generation_flags(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    _add_model_flags(parser)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep this much probability mass")
    parser.add_argument("--seed", type=int, help="makes sampling at temperature > 0 reproducible")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmkit", description="Local LLM applications on your CPU.")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="interactive streaming chat in the terminal")
    _add_generation_flags(chat, max_new_tokens=512)
    chat.set_defaults(run=cmd_chat)
    generate = commands.add_parser("generate", help="print the continuation of PROMPT")
    generate.add_argument("prompt")
    generate.add_argument("--chat", action="store_true", help="send PROMPT as one user message under the chat template")
    _add_generation_flags(generate, max_new_tokens=128)
    generate.set_defaults(run=cmd_generate)
    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API (/v1)")
    _add_model_flags(serve)
    serve.add_argument("--model-name", help="the name clients send as `model` (default: the model file's stem)")
    serve.add_argument("--host", default="127.0.0.1", help="0.0.0.0 exposes it to the network, without any auth")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(run=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
