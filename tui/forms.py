"""Form fields generated from the engine's config dataclasses: the widget, choices, default, tooltip
and validation of a field all come from its `ParamSpec` (the CLI's flags come from the same place).
A value is checked by the config class itself, so the form refuses exactly what the engine would."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Label, Select

from engine.core.config import Config, ParamSpec
from engine.core.errors import InputError

BOOL_CHOICES = ("true", "false")


class FormError(ValueError):
    """A field holds something the engine would reject; the message says which and why."""


def text_of(value: Any) -> str:
    """A config value as the form shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(getattr(value, "value", value))


def field_widget(spec: ParamSpec, value: Any, wid: str) -> Widget:
    """A Select for choices and booleans, an Input for numbers and text."""
    text = text_of(value)
    choices = spec.choices or (BOOL_CHOICES if spec.type is bool else None)
    if choices:
        w: Widget = Select([(c, c) for c in choices], value=text if text in choices else choices[0],
                           allow_blank=False, compact=True, id=wid)
    else:
        w = Input(text, compact=True, id=wid, placeholder=text)
    w.tooltip = tooltip(spec)
    return w


def tooltip(spec: ParamSpec) -> str:
    bounds = spec.bounds()
    return spec.help + (f" ({bounds})" if bounds else "") + f"; default {text_of(spec.default)}" + (
        f", {text_of(spec.cpu)} on CPU" if spec.cpu is not None else "")


def form_row(label: str, widget: Widget, tip: str | None = None) -> Horizontal:
    lab = Label(label, classes="form-label")
    if tip:
        lab.tooltip = tip
    return Horizontal(lab, widget, classes="form-row")


def field_rows(specs: Iterable[ParamSpec], values: Mapping[str, Any], prefix: str) -> list[Horizontal]:
    """One labelled row per field, ids `<prefix><name>`."""
    return [form_row(s.name, field_widget(s, values.get(s.name, s.default), f"{prefix}{s.name}"), tooltip(s))
            for s in specs]


def widget_text(widget: Widget) -> str:
    value = getattr(widget, "value", "")
    return "" if value is None or value is Select.NULL else str(value)


def parse_fields(cls: type[Config], texts: Mapping[str, str], base: Config | None = None,
                 what: str | None = None) -> dict[str, Any]:
    """The typed values of `texts` (field name -> text) for `cls`; FormError naming the first bad
    field. Empty text means the default (`base`'s value)."""
    out: dict[str, Any] = {}
    for name, text in texts.items():
        spec = cls.param(name)
        if text.strip() == "":
            if base is None:
                raise FormError(f"{name}: empty (default {text_of(spec.default)})")
            continue
        try:
            out[name] = spec.parse(text)
        except InputError as e:
            raise FormError(str(e)) from None
    return out


def check_config(cls: type[Config], values: Mapping[str, Any], device_type: str, what: str) -> Config:
    """Build the config as the engine will (cross-field checks too); FormError if it refuses."""
    try:
        return cls.from_values(values, device_type, what=what)
    except InputError as e:
        raise FormError(str(e)) from None
