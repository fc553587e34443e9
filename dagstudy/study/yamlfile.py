"""Read a YAML study or confirmation file safely, before anything else looks at it.

``read_yaml(path)`` parses with ``StrictSafeLoader`` (PyYAML's ``SafeLoader``: plain data, no
Python tags) and refuses, with a one-line ``YamlFileError`` naming the file and the problem:

- a file over ``MAX_BYTES`` (the study and confirmation files are a few KB);
- a document whose aliases expand it to more than ``MAX_EXPANDED_NODES`` nodes (an "alias
  bomb": nine anchors of nine references each is 387 million strings once expanded, which any
  walk over the data, such as the ``${VAR}`` expansion, would try to build);
- a mapping that repeats a key (YAML keeps the last silently; a study file that sets ``lr``
  twice is a mistake to name, not to guess at).

Error lines are capped at ``MAX_ERROR_CHARS``: a problem names the first offending key or
position, never the file's contents.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1_000_000
MAX_EXPANDED_NODES = 100_000
MAX_ERROR_CHARS = 300


class YamlFileError(ValueError):
    """A file that cannot be read as a study or confirmation document; one line."""


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    mark = key_node.start_mark
                    raise YamlFileError(f"duplicate key {clip(repr(key), 80)} at line "
                                        f"{mark.line + 1}, column {mark.column + 1}")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def expanded_size(node: yaml.Node, memo: dict[int, int] | None = None) -> int:
    """Nodes in the document ``node`` roots once every alias is expanded (aliases share node
    objects, so a memo keeps this linear in the file while the result can be exponential)."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def parse_yaml(text: str, where: str = "<string>") -> Any:
    """The data of one YAML document (``None`` for an empty one); ``YamlFileError`` as in the
    module docstring."""
    loader = None
    try:
        loader = StrictSafeLoader(text)
        root = loader.get_single_node()
        if root is None:
            return None
        size = expanded_size(root)
        if size > MAX_EXPANDED_NODES:
            raise YamlFileError(f"{where}: its aliases expand it to {size:,} nodes (at most "
                                f"{MAX_EXPANDED_NODES:,}); write the values out")
        return loader.construct_document(root)
    except YamlFileError as e:
        raise YamlFileError(clip(f"{where}: {e}" if not str(e).startswith(where) else e)) from None
    except yaml.YAMLError as e:
        raise YamlFileError(clip(f"{where}: not valid YAML: {e}")) from None
    except RecursionError:
        raise YamlFileError(f"{where}: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read and parse the file at ``path`` (see ``parse_yaml``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise YamlFileError(f"{path}: {size:,} bytes; a study or confirmation file is at "
                                f"most {MAX_BYTES:,}")
        text = path.read_text()
    except OSError as e:
        raise YamlFileError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise YamlFileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return parse_yaml(text, str(path))
