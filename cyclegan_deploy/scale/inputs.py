"""What `cgdeploy batch` is given: videos, folders of videos (searched recursively) and text files listing
either, one per line. Each input gets its output path below OUT_DIR: its name, under its folder below the
folder it was found in, in the same container."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cyclegan_deploy.errors import ConfigError

# what a folder search picks up (a file named directly is tried whatever its suffix)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".flv", ".wmv",
                            ".mpg", ".mpeg", ".3gp", ".ogv"})
LIST_SUFFIXES = frozenset({".txt", ".list", ".lst"})


@dataclass(frozen=True)
class WorkInput:
    src: Path
    rel: Path  # the output's path below OUT_DIR

    def dst(self, out_dir: Path) -> Path:
        return out_dir / self.rel


def _videos_below(root: Path, out_dir: Path) -> list[WorkInput]:
    found = []
    skip = out_dir.resolve()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file() or path.name.startswith("."):
            continue
        if skip == path.resolve() or skip in path.resolve().parents:  # OUT_DIR inside the folder: our outputs
            continue
        found.append(WorkInput(path, path.relative_to(root)))
    return found


def _listed(list_file: Path) -> list[Path]:
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{list_file}: cannot read the list of inputs ({e}); give a UTF-8 text file, one video "
                          "or folder per line") from e
    entries = [line.strip() for line in lines]
    # relative entries are relative to the list, so a list travels with its videos
    return [p if p.is_absolute() else list_file.parent / p
            for p in (Path(e) for e in entries if e and not e.startswith("#"))]


def collect_inputs(args: list[Path], out_dir: Path) -> list[WorkInput]:
    """Every input video once, in the order given (folders sorted). Refuses a missing path, an empty result,
    and two inputs that would write the same output."""
    items: list[WorkInput] = []
    for arg in args:
        if not arg.exists():
            raise ConfigError(f"{arg}: no such file or folder; give videos, folders of videos, or a .txt list")
        if arg.is_dir():
            found = _videos_below(arg, out_dir)
            if not found:
                raise ConfigError(f"{arg}: no videos in this folder (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
            items += found
        elif arg.suffix.lower() in LIST_SUFFIXES:
            for entry in _listed(arg):
                if not entry.exists():
                    raise ConfigError(f"{arg}: lists {entry}, which does not exist; fix the line or remove it")
                items += _videos_below(entry, out_dir) if entry.is_dir() else [WorkInput(entry, Path(entry.name))]
        else:
            items.append(WorkInput(arg, Path(arg.name)))
    seen: dict[Path, Path] = {}
    unique = []
    for item in items:
        first = seen.setdefault(item.rel, item.src)
        if first.resolve() == item.src.resolve():
            if first is item.src:
                unique.append(item)
            continue
        raise ConfigError(f"{item.src} and {first}: both would be written to {out_dir / item.rel}; give their "
                          "folder instead (outputs keep the folders below it) or rename one")
    if not unique:
        raise ConfigError("no input videos: give videos, folders of videos, or a .txt list of them")
    return unique
