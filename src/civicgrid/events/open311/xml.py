"""GeoReport v2 XML: the same data as the JSON, with the spec's element names.

Lists get a wrapper element and one child per item (`<services><service>…`,
`<attributes><attribute>…`, `<values><value>…`, `<formats><format>…`); null is an empty element.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

# A list's element → the element of each item, as in the spec's examples.
ITEM = {
    "services": "service",
    "attributes": "attribute",
    "values": "value",
    "endpoints": "endpoint",
    "formats": "format",
    "service_requests": "request",
    "errors": "error",
}


def _fill(el: Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, v in value.items():
            _fill(SubElement(el, key), v)
    elif isinstance(value, list):
        for v in value:
            _fill(SubElement(el, ITEM.get(el.tag, "item")), v)
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif value is not None:
        el.text = str(value)


def render(root: str, value: Any) -> bytes:
    """`value` (a dict or a list of dicts) as a UTF-8 XML document with root element `root`."""
    el = Element(root)
    _fill(el, value)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + tostring(el, encoding="utf-8", xml_declaration=False)
