"""Command line: ``python -m circuitkit {demo,bench,run} ...``.

Subcommands live in their own modules and are imported only when called:

* ``demo [--out DIR]`` -> :mod:`circuitkit.demo`
* ``bench NAME [--json PATH]`` -> ``circuitkit.bench.<name>`` (``ground-truth``, ``scale``, ``debias``,
  ``faithfulness``)
* ``run CONFIG`` -> :mod:`circuitkit.recipes`

A bench module exposes ``add_arguments(parser)`` and ``main(args) -> int``; it prints its table and writes
its JSON records.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys

BENCHES = {"ground-truth": "circuitkit.bench.ground_truth", "scale": "circuitkit.bench.scale",
           "component-scale": "circuitkit.bench.component_scale", "debias": "circuitkit.bench.debias",
           "capture": "circuitkit.bench.capture", "faithfulness": "circuitkit.bench.faithfulness"}


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:  # a bench that is not part of this install
        if e.name == name:
            return None
        raise


def _plain(text: str) -> str:
    """Docstring text for a terminal: RST roles and double backticks removed."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


#: Errors a user can cause with arguments; printed as one line (exit 2) unless ``-v``.
USER_ERRORS = (ValueError, TypeError, FileNotFoundError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m circuitkit", description=_plain(__doc__.splitlines()[0]))
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the end-to-end demo on the embedded real model (SmolLM2) and a Tracr model")
    demo.add_argument("--out", default="outputs/demo", help="output directory (default: outputs/demo)")
    demo.add_argument("--quick", action="store_true", help="fewer prompts (for tests)")
    demo.add_argument("--model", default="auto", choices=["auto", "smollm2-135m", "toylm"],
                      help="the LM of part 1 (default auto: SmolLM2-135M when it and its SAEs are installed)")

    bench = sub.add_parser("bench", help="benchmarks: print a table and write JSON")
    bsub = bench.add_subparsers(dest="bench", required=True)
    for name, modname in BENCHES.items():
        mod = _module(modname)
        p = bsub.add_parser(name, help=_plain((mod.__doc__ or name).strip().splitlines()[0]) if mod else name)
        p.add_argument("--json", default=None, help="write the records to this JSON file")
        if mod is not None and hasattr(mod, "add_arguments"):
            mod.add_arguments(p)

    recipes = _module("circuitkit.recipes")
    names = recipes.available_recipes() if recipes is not None else []
    run = sub.add_parser("run", help="run a ready configuration (recipe) by name or JSON path",
                         epilog="shipped recipes: " + ", ".join(names) + " (toylm-* run offline; the others need "
                         "internet)")
    run.add_argument("config", help="recipe name or path to a JSON config")
    run.add_argument("--out", default=None, help="output directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(parser, args)
    except USER_ERRORS as e:
        if args.verbose:
            raise
        msg = str(e) if not isinstance(e, KeyError) else str(e.args[0] if e.args else e)
        print(f"error: {msg} (run with -v for the traceback)", file=sys.stderr)
        return 2


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import run_demo

        print(run_demo(out=args.out, quick=args.quick, model=args.model).summary())
        return 0
    if args.command == "bench":
        mod = _module(BENCHES[args.bench])
        if mod is None:
            parser.error(f"benchmark {args.bench!r} is not available in this install")
        return int(mod.main(args) or 0)
    if args.command == "run":
        mod = _module("circuitkit.recipes")
        if mod is None:
            parser.error("recipes are not available in this install")
        return int(mod.main(args) or 0)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
