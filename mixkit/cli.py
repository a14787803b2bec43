"""The ``mixkit`` command line: one argparse sub-command per entry of ``SUBCOMMANDS``."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["SUBCOMMANDS", "build_parser", "main"]


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="write an ImageFolder to an FFCV .beton (or to webdataset tar shards)",
        description="Write an ImageFolder (root/<class>/<image>) to an FFCV .beton for the 'ffcv' loader, "
                    "or with --format wds to webdataset .tar shards for the 'dali' loader. Every image is "
                    "decoded once first: corrupt, truncated or non-image files stop the conversion with "
                    "a list, unless --skip-corrupt skips them (they are counted, printed and recorded in "
                    "the <out>.json sidecar). Every option is checked and the images validated before the "
                    "output is touched; the output is written under a temporary name and moved into place "
                    "complete, so a failed or interrupted run leaves an existing output as it was. "
                    "Defaults follow FFCV's ImageNet example.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("root", help="ImageFolder root directory, one sub-folder per class")
    p.add_argument("out", help="output .beton file (--format beton) or output directory (--format wds)")
    p.add_argument("--format", choices=("beton", "wds"), default="beton",
                   help="beton: FFCV .beton; wds: webdataset tar shards (<key>.jpg, .cls, .label)")
    p.add_argument("--max-resolution", type=int, default=512,
                   help="beton: resize so that the longer side is at most this many pixels (0 keeps the "
                        "original size)")
    p.add_argument("--jpeg-quality", type=int, default=90,
                   help="beton: JPEG quality (1-100) of the images stored compressed")
    p.add_argument("--compress-probability", type=float, default=0.5,
                   help="beton, --write-mode proportion: fraction of images stored as JPEG; the rest are "
                        "stored raw (bigger file, faster loading)")
    p.add_argument("--write-mode", choices=("raw", "jpg", "smart", "proportion"), default="proportion",
                   help="beton: how FFCV's RGBImageField stores images")
    p.add_argument("--num-workers", type=int, default=-1,
                   help="beton: writer processes (-1: all cores)")
    p.add_argument("--chunk-size", type=int, default=100, help="beton: samples per writer task")
    p.add_argument("--shard-size", type=int, default=1000, help="wds: samples per .tar shard")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip bad files (counted and reported) instead of stopping with an error; for "
                        "beton this includes images too small for ffcv's decoders")
    p.add_argument("--overwrite", action="store_true",
                   help="wds: replace a non-empty output directory (one written by an earlier conversion) as "
                        "a whole; without it such a directory is refused. A .beton is always replaced, "
                        "atomically")
    p.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    from .data.convert import BetonOptions, write_beton, write_webdataset

    # Every flag is checked, whatever the format, before anything is read or written.
    options = BetonOptions(max_resolution=args.max_resolution or None, jpeg_quality=args.jpeg_quality,
                           compress_probability=args.compress_probability, write_mode=args.write_mode,
                           num_workers=args.num_workers, chunk_size=args.chunk_size)
    if args.shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {args.shard_size}.")
    if args.format == "beton":
        result = write_beton(args.root, args.out, options, skip_corrupt=args.skip_corrupt)
    else:
        result = write_webdataset(args.root, args.out, shard_size=args.shard_size,
                                  skip_corrupt=args.skip_corrupt, overwrite=args.overwrite)
    index = result.index
    print(f"wrote {result.num_samples} samples of {len(index.classes)} classes to "
          f"{', '.join(str(p) for p in result.paths)}")
    if index.skipped:
        print(f"skipped {len(index.skipped)} bad file(s):")
        for path, reason in index.skipped:
            print(f"  {path}: {reason}")
    return 0


def _add_viz(sub: argparse._SubParsersAction) -> None:
    from .viz import add_parser

    add_parser(sub)


# Sub-command name -> function adding its parser (which sets ``func``); add new sub-commands here.
SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "convert": _add_convert,
    "viz": _add_viz,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``mixkit`` argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="mixkit", description="mixkit command line tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mixkit`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"mixkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
