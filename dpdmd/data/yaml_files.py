"""Reading YAML that a user (or anyone) wrote: bounded, strict, and every refusal names the place.

`read_yaml_mapping` is PyYAML's safe loader with the checks the files of this project need:

- the file is at most ``MAX_BYTES`` (read no further: a huge file costs nothing);
- it is UTF-8 (the first bad byte's offset is named);
- no key appears twice in one mapping (PyYAML silently keeps the last: a typo'd override would
  win or lose unnoticed); the message names the key and both lines;
- the document, with every alias expanded, has at most ``MAX_NODES`` nodes and is at most
  ``MAX_DEPTH`` deep, and no alias refers to itself. An "alias bomb" (9 levels of 9 aliases:
  a billion nodes from 1 kB) is refused while it is still the small graph PyYAML composed, before
  anything walks the expanded tree.

Problems are raised as ``ValueError`` with one line; `dpdmd.config.load_yaml` turns them into a
`ConfigError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_BYTES = 1 << 20  # config and space files are a few kB; 1 MiB is generous
MAX_NODES = 100_000  # after alias expansion
MAX_DEPTH = 64


def read_yaml_mapping(path: Path):
    """The parsed document of ``path`` (None for an empty file). Raises OSError if unreadable and
    ValueError naming the problem (size, encoding, syntax, duplicate key, expansion)."""
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError(f"the file is larger than {MAX_BYTES // 1024} KiB; configuration files are a few kB "
                         "(is this the right file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text: byte 0x{raw[err.start]:02x} at offset {err.start} "
                         "(save the file as UTF-8)") from None
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
        except yaml.YAMLError as err:
            raise ValueError(f"not valid YAML: {err}") from None
        if node is None:
            return None
        _check_graph(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _check_graph(root: Node) -> None:
    """Duplicate keys, expanded size and depth of the composed node graph (aliases are shared
    nodes in it, so each node's expanded size is computed once: linear in the file's size)."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def expanded(node: Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if depth > MAX_DEPTH:
            raise ValueError(f"line {_line(node)}: nested deeper than {MAX_DEPTH} levels")
        if key in in_progress:
            raise ValueError(f"line {_line(node)}: an alias refers to the node that contains it (a cycle)")
        in_progress.add(key)
        total = 1
        if isinstance(node, MappingNode):
            _check_duplicate_keys(node)
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, SequenceNode):
            children = node.value
        else:
            children = []
        for child in children:
            total += expanded(child, depth + 1)
            if total > MAX_NODES:
                raise ValueError(f"line {_line(node)}: the document expands to more than {MAX_NODES} values "
                                 "through aliases (&anchor / *alias); write the values out or use fewer aliases")
        in_progress.discard(key)
        sizes[key] = total
        return total

    expanded(root, 0)


def _check_duplicate_keys(node: MappingNode) -> None:
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not hasattr(key_node, "value") \
                or not isinstance(key_node.value, str):
            continue  # merge keys (<<) may repeat what they merge; complex keys are not ours
        key = (key_node.tag, key_node.value)
        if key in seen:
            raise ValueError(f"line {_line(key_node)}: duplicate key {key_node.value!r} (first at line {seen[key]}); "
                             "YAML keeps only one of them: remove the other")
        seen[key] = _line(key_node)
