"""The device filter query language (``devices list --where`` and dynamic groups).

    node = parse('site = "plant-7" and fw < "2.1" and tag:canary')   # QueryError with .position
    matches(node, device)                                           # the device view as a mapping
    format_query(node)                                              # canonical text

``syntax`` holds the grammar, the AST and the parser and formatter; ``match`` the evaluation rules.
"""

from cloud.fleet.query.match import matches
from cloud.fleet.query.syntax import FIELDS, And, Compare, In, Node, Not, Or, Tag, format_query, parse

__all__ = ["And", "Compare", "FIELDS", "In", "Node", "Not", "Or", "Tag", "format_query", "matches", "parse"]
