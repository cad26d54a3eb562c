"""YAML loading that never builds objects: SafeLoader plus no duplicate keys, no anchors/aliases, a size cap,
and YAML 1.2 floats (``1e-3`` is a float here, where YAML 1.1's safe loader would hand back a string)."""
import os
import re

import yaml
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent

from .errors import KDPluginError
from .fileio import require_file

MAX_YAML_BYTES = 1 * 2**20

# YAML 1.2 core-schema floats (exponent sign optional, "-.5" allowed), with YAML 1.1's digit separators.
_FLOAT_12 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*\.(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class StrictSafeLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise ConstructorError(None, None, "aliases (*name) are not allowed", event.start_mark)
        event = self.peek_event()
        if getattr(event, "anchor", None):
            raise ConstructorError(None, None, "anchors (&name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ConstructorError(None, None, f"mapping key {key!r} is not a scalar (unhashable)",
                                       key_node.start_mark) from None
            if key in seen:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


StrictSafeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
StrictSafeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def load_yaml(path):
    """Parse a YAML file into plain dicts/lists/scalars, or raise KDPluginError naming the file."""
    if not isinstance(path, str):
        raise KDPluginError(f"{path!r}: YAML file not found")
    require_file(path, "YAML file")
    size = os.path.getsize(path)
    if size > MAX_YAML_BYTES:
        raise KDPluginError(f"{path}: {size} bytes exceeds the {MAX_YAML_BYTES} byte limit for a schedule")
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=StrictSafeLoader)  # noqa: S506 - StrictSafeLoader subclasses SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise KDPluginError(f"{path}: invalid YAML{where}: {problem}") from None
    except (UnicodeDecodeError, RecursionError) as err:
        raise KDPluginError(f"{path}: unreadable YAML ({type(err).__name__})") from None
    except (ValueError, OverflowError) as err:  # a scalar its constructor cannot build, e.g. date 2001-13-45
        raise KDPluginError(f"{path}: invalid YAML value ({err})") from None
