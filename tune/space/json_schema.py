"""The JSON Schema of a search-space file, for editors: VS Code's YAML extension (any
yaml-language-server client) completes, documents and checks a file whose first line is
``# yaml-language-server: $schema=./search-space.schema.json``.

    python -m tune.space --json-schema > search_spaces/search-space.schema.json

Written from the pydantic models (`tune.space.schema.SearchSpace`); the sections the space keeps
as mappings until a trial's `TrainConfig` is built (``train``, ``backbones.NAME.train``, ``eval``)
get the schema of `dpdmd.TrainConfig` and `dpdmd.EvalConfig`, and ``parameters`` and
``backbones`` the names they may hold. The schema catches what an editor can see; `load_space`
checks the rest (a key's meaning across sections, the weights on disk). tests/tune/test_space.py
checks the committed file against this output.
"""

from __future__ import annotations

from dpdmd.backbones import available_backbones
from dpdmd.config import TrainConfig

from .schema import SEARCHABLE, SearchSpace

SCHEMA_FILE = "search-space.schema.json"  # beside the shipped spaces in search_spaces/


def space_json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a search-space file."""
    schema = SearchSpace.model_json_schema()
    defs = schema["$defs"]
    train = TrainConfig.model_json_schema()
    defs.update(train.pop("$defs"))  # EvalConfig
    defs["TrainConfig"] = train
    defs["TrainSettings"] = {**train, "title": "TrainSettings", "description": "keys of TrainConfig, but backbone "
                             "(chosen under backbones and parameters.backbone)",
                             "properties": {k: v for k, v in train["properties"].items() if k != "backbone"}}
    props = schema["properties"]
    props["train"] = {"$ref": "#/$defs/TrainSettings", "description": props["train"]["description"]}
    props["eval"] = {"$ref": "#/$defs/EvalConfig", "description": props["eval"]["description"]}
    backbone = defs["BackboneSpec"]["properties"]
    backbone["train"] = {"$ref": "#/$defs/TrainSettings", "description": backbone["train"]["description"]}
    props["parameters"]["propertyNames"] = {"enum": list(dict.fromkeys(["backbone", *SEARCHABLE]))}
    props["backbones"]["propertyNames"] = {"enum": available_backbones()}
    props["name"].pop("default")  # the file's stem
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
