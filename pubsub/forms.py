"""XEP-0004 data forms as pubsub uses them: node configuration (XEP-0060
§8.2, §16.4.4 pubsub#node_config), publish-options (§7.1.5, §16.4.5),
subscription options (§6.3, §16.4.2 pubsub#subscribe_options) and the
subscription authorization form (§8.6, §16.4.3).

Configuration lives in plain dicts keyed by the field var without its
`pubsub#` prefix ({"max_items": 10, "access_model": "open", ...}); this
module turns forms into such dicts (checking every value) and back.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from xmpp.protocol.errors import StanzaError

from .errors import PubsubError

NS_DATA = "jabber:x:data"
X_TAG = f"{{{NS_DATA}}}x"
FIELD_TAG = f"{{{NS_DATA}}}field"
VALUE_TAG = f"{{{NS_DATA}}}value"
NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"
SUBSCRIBE_OPTIONS = "http://jabber.org/protocol/pubsub#subscribe_options"
SUBSCRIBE_AUTHORIZATION = "http://jabber.org/protocol/pubsub#subscribe_authorization"

ACCESS_MODELS = ("open", "presence", "roster", "whitelist", "authorize")
PUBLISH_MODELS = ("publishers", "subscribers", "open")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
NOTIFICATION_TYPES = ("normal", "headline")
# "max" as max_items: as many as the service allows (XEP-0060 §7.1.5, XEP-0402 §3).
MAX = "max"

# var -> (field type, label, choices or None). Order is the form's order.
NODE_FIELDS: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "title": ("text-single", "A friendly name for the node", None),
    "type": ("text-single", "The type of node data, usually a payload namespace", None),
    "node_type": (
        "list-single",
        "Whether the node is a leaf or a collection",
        ("leaf", "collection"),
    ),
    "max_items": ("text-single", "Max # of items to persist ('max' for the most allowed)", None),
    "persist_items": ("boolean", "Persist items to storage", None),
    "item_expire": ("text-single", "Seconds after which items expire (0: never)", None),
    "access_model": ("list-single", "Who may subscribe and retrieve items", ACCESS_MODELS),
    "roster_groups_allowed": ("list-multi", "Roster groups allowed to subscribe", None),
    "publish_model": ("list-single", "Who may publish items", PUBLISH_MODELS),
    "deliver_notifications": ("boolean", "Deliver event notifications", None),
    "deliver_payloads": ("boolean", "Deliver payloads with event notifications", None),
    "notify_config": ("boolean", "Notify subscribers when the node configuration changes", None),
    "notify_delete": ("boolean", "Notify subscribers when the node is deleted", None),
    "notify_retract": ("boolean", "Notify subscribers when items are removed", None),
    "send_last_published_item": ("list-single", "When to send the last published item", SEND_LAST),
    "notification_type": ("list-single", "Message type of notifications", NOTIFICATION_TYPES),
    "children": ("text-multi", "The child nodes (collection)", None),
    "collection": ("text-single", "The collection this node belongs to", None),
}
SUBSCRIBE_FIELDS: dict[str, tuple[str, str]] = {
    "deliver": ("boolean", "Enable delivery?"),
    "digest": ("boolean", "Receive digest notifications (approx. one per day)?"),
    "include_body": ("boolean", "Receive message body in addition to payload?"),
    "subscription_type": ("list-single", "Receive items or nodes notifications"),
    "subscription_depth": ("list-single", "Depth of a collection subscription"),
    "expire": ("text-single", "Requested lease period"),
    "show-values": ("list-multi", "Receive notifications for these presence states"),
}
BOOLEAN_FIELDS = frozenset(
    var for var, (kind, _, _) in NODE_FIELDS.items() if kind == "boolean"
) | {"deliver", "digest", "include_body"}


def parse_boolean(value: str) -> bool:
    """XEP-0004 §3.3 boolean: 0/1/false/true."""
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise StanzaError("bad-request", f"{value!r} is not a boolean")


def form_values(x: Element) -> tuple[str, dict[str, list[str]]]:
    """(FORM_TYPE, {var: [values]}) of a submitted form."""
    form_type = ""
    values: dict[str, list[str]] = {}
    for field in x.iter(FIELD_TAG):
        var = field.get("var")
        if not var:
            continue
        found = [v.text or "" for v in field.findall(VALUE_TAG)]
        if var == "FORM_TYPE":
            form_type = found[0] if found else ""
        else:
            values[var] = found
    return form_type, values


def find_form(parent: Element | None) -> Element | None:
    if parent is None:
        return None
    return parent.find(X_TAG)


def parse_node_config(x: Element, form_type: str = NODE_CONFIG, max_items_limit: int = 0) -> dict:
    """A submitted node configuration or publish-options form as a config dict.

    A form of the wrong FORM_TYPE, or a value the field cannot take, is
    <bad-request/>; unknown fields are <not-acceptable/> for node_config
    (§8.2.5) and ignored, then compared, for publish-options (§7.1.5)."""
    if x.get("type") == "cancel":
        return {}
    found_type, values = form_values(x)
    if found_type and found_type != form_type:
        raise StanzaError("bad-request", f"expected a {form_type} form")
    config: dict = {}
    for var, raw in values.items():
        if not var.startswith("pubsub#"):
            raise StanzaError("not-acceptable", f"unknown field {var}")
        key = var[len("pubsub#") :]
        if key not in NODE_FIELDS:
            raise PubsubError("not-acceptable", "unsupported", feature="config-node")
        config[key] = _node_value(key, raw, max_items_limit)
    return config


def _node_value(key: str, raw: list[str], max_items_limit: int):
    kind, _, choices = NODE_FIELDS[key]
    if kind in ("list-multi", "text-multi"):
        return [v for v in raw if v]
    value = raw[0] if raw else ""
    if kind == "boolean":
        return parse_boolean(value)
    if choices is not None and value not in choices:
        raise StanzaError("not-acceptable", f"pubsub#{key} cannot be {value!r}")
    if key == "max_items":
        if value == MAX:
            return MAX
        number = _non_negative(value, key)
        if max_items_limit and number > max_items_limit:
            raise StanzaError("not-acceptable", f"pubsub#max_items is at most {max_items_limit}")
        return number
    if key == "item_expire":
        return _non_negative(value, key) if value else 0
    return value


def _non_negative(value: str, key: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise StanzaError("not-acceptable", f"pubsub#{key} is a number") from None
    if number < 0:
        raise StanzaError("not-acceptable", f"pubsub#{key} is not negative")
    return number


def config_form(config: dict, form_type: str = NODE_CONFIG, kind: str = "form") -> Element:
    """The node configuration as a form (§8.2.1) or as a result (disco#info, §5.4)."""
    x = Element(X_TAG, {"type": kind})
    _hidden(x, "FORM_TYPE", form_type)
    for key, (field_type, label, choices) in NODE_FIELDS.items():
        if key not in config:
            continue
        field = SubElement(x, FIELD_TAG, {"var": f"pubsub#{key}", "type": field_type})
        if kind == "form":
            field.set("label", label)
            for choice in choices or ():
                option = SubElement(field, f"{{{NS_DATA}}}option")
                SubElement(option, VALUE_TAG).text = choice
        value = config[key]
        for text in value if isinstance(value, list) else [value]:
            SubElement(field, VALUE_TAG).text = _text(text)
    return x


def _text(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _hidden(x: Element, var: str, value: str) -> None:
    field = SubElement(x, FIELD_TAG, {"var": var, "type": "hidden"})
    SubElement(field, VALUE_TAG).text = value


def parse_subscribe_options(x: Element) -> dict:
    """A submitted pubsub#subscribe_options form (§6.3.5); bad values are
    <bad-request/> with <invalid-options/> (§6.3.7)."""
    found_type, values = form_values(x)
    if found_type and found_type != SUBSCRIBE_OPTIONS:
        raise PubsubError("bad-request", "invalid-options")
    options: dict = {}
    for var, raw in values.items():
        key = var.removeprefix("pubsub#")
        if key not in SUBSCRIBE_FIELDS:
            raise PubsubError("bad-request", "invalid-options")
        value = raw[0] if raw else ""
        if key in BOOLEAN_FIELDS:
            try:
                options[key] = parse_boolean(value)
            except StanzaError:
                raise PubsubError("bad-request", "invalid-options") from None
        elif SUBSCRIBE_FIELDS[key][0] == "list-multi":
            options[key] = raw
        else:
            options[key] = value
    return options


def subscribe_options_form(options: dict) -> Element:
    """The subscription options form (§6.3.2), with the current values."""
    x = Element(X_TAG, {"type": "form"})
    _hidden(x, "FORM_TYPE", SUBSCRIBE_OPTIONS)
    current = {"deliver": True, **options}
    for key, (field_type, label) in SUBSCRIBE_FIELDS.items():
        field = SubElement(x, FIELD_TAG, {"var": f"pubsub#{key}", "type": field_type})
        field.set("label", label)
        if key in current:
            value = current[key]
            for text in value if isinstance(value, list) else [value]:
                SubElement(field, VALUE_TAG).text = _text(text)
    return x


def authorization_form(node: str, subscriber: str, subid: str) -> Element:
    """The form an owner gets for a subscription to approve (§8.6, §16.4.3)."""
    x = Element(X_TAG, {"type": "form"})
    SubElement(x, f"{{{NS_DATA}}}title").text = "PubSub subscriber request"
    SubElement(x, f"{{{NS_DATA}}}instructions").text = (
        "To approve this entity's subscription request, click the OK button. "
        "To deny the request, click the cancel button."
    )
    _hidden(x, "FORM_TYPE", SUBSCRIBE_AUTHORIZATION)
    _hidden(x, "pubsub#subid", subid)
    for var, kind, label, value in (
        ("pubsub#node", "text-single", "Node ID", node),
        ("pubsub#subscriber_jid", "jid-single", "Subscriber Address", subscriber),
        ("pubsub#allow", "boolean", "Allow this JID to subscribe to this pubsub node?", "false"),
    ):
        field = SubElement(x, FIELD_TAG, {"var": var, "type": kind, "label": label})
        SubElement(field, VALUE_TAG).text = value
    return x
