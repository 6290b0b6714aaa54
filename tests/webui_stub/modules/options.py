"""Stand-in for modules/options.py (v1.10.1 82a973c0): settings (`shared.opts`) and their metadata.

Same classes and behaviour as the WebUI for what extensions use: `OptionInfo` (default, label,
component, onchange, section, infotext, ...), `Options` with attribute access to values,
`add_option` (what an `on_ui_settings` callback calls), `set` (runs `onchange`), `onchange`,
`get_default` and `cast_value`. Gradio components are never built here (the WebUI's settings page
builds them from `component`/`component_args`), so `component` is stored as given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from modules import errors
from modules.shared_cmd_options import cmd_opts


class OptionInfo:
    """modules/options.py:L13: one setting's default and UI metadata."""

    def __init__(
        self,
        default: Any = None,
        label: str = "",
        component: Any = None,
        component_args: Any = None,
        onchange: Callable[[], Any] | None = None,
        section: tuple[str, str] | None = None,
        refresh: Callable[[], Any] | None = None,
        comment_before: str = "",
        comment_after: str = "",
        infotext: str | None = None,
        restrict_api: bool = False,
        category_id: str | None = None,
    ) -> None:
        self.default = default
        self.label = label
        self.component = component
        self.component_args = component_args
        self.onchange = onchange
        self.section = section
        self.category_id = category_id
        self.refresh = refresh
        self.do_not_save = False
        self.comment_before = comment_before
        self.comment_after = comment_after
        self.infotext = infotext
        self.restrict_api = restrict_api

    def link(self, label: str, url: str) -> OptionInfo:
        """modules/options.py:L36."""
        self.comment_before += f"[<a href='{url}' target='_blank'>{label}</a>]"
        return self

    def js(self, label: str, js_func: str) -> OptionInfo:
        """modules/options.py:L40."""
        self.comment_before += f"[<a onclick='{js_func}(); return false'>{label}</a>]"
        return self

    def info(self, info: str) -> OptionInfo:
        """modules/options.py:L44."""
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def html(self, html: str) -> OptionInfo:
        """modules/options.py:L48."""
        self.comment_after += html
        return self

    def needs_restart(self) -> OptionInfo:
        """modules/options.py:L52."""
        self.comment_after += " <span class='info'>(requires restart)</span>"
        return self

    def needs_reload_ui(self) -> OptionInfo:
        """modules/options.py:L56."""
        self.comment_after += " <span class='info'>(requires Reload UI)</span>"
        return self


class OptionHTML(OptionInfo):
    """modules/options.py:L61: a text-only entry on the settings page (never saved)."""

    def __init__(self, text: str) -> None:
        super().__init__(str(text).strip(), label="")
        self.do_not_save = True


def options_section(section_identifier: tuple[str, ...], options_dict: dict[str, OptionInfo]) -> dict[str, OptionInfo]:
    """modules/options.py:L68: tag every option of `options_dict` with its settings section."""
    for v in options_dict.values():
        if len(section_identifier) == 2:
            v.section = section_identifier
        elif len(section_identifier) == 3:
            v.section = section_identifier[0:2]
            v.category_id = section_identifier[2]
    return options_dict


options_builtin_fields = {"data_labels", "data", "restricted_opts", "typemap"}


class Options:
    """modules/options.py:L82: the settings; `opts.key` reads a value, `opts.key = v` writes it.

    Writing checks --freeze-settings and restricted (hidden) components as the WebUI does; the
    section and specific-setting freezes are omitted (their flags default to off).
    """

    typemap = {int: float}

    def __init__(self, data_labels: dict[str, OptionInfo], restricted_opts: set[str]) -> None:
        self.data_labels = data_labels
        self.data = {k: v.default for k, v in self.data_labels.items() if not v.do_not_save}
        self.restricted_opts = restricted_opts

    def __setattr__(self, key: str, value: Any) -> None:
        if key in options_builtin_fields:
            return super().__setattr__(key, value)
        if self.data is not None and (key in self.data or key in self.data_labels):
            assert not cmd_opts.freeze_settings, "changing settings is disabled"
            info = self.data_labels.get(key, None)
            if info is not None and info.do_not_save:
                return None
            comp_args = info.component_args if info else None
            if isinstance(comp_args, dict) and comp_args.get("visible", True) is False:
                raise RuntimeError(f"not possible to set '{key}' because it is restricted")
            if cmd_opts.hide_ui_dir_config and key in self.restricted_opts:
                raise RuntimeError(f"not possible to set '{key}' because it is restricted with --hide_ui_dir_config")
            self.data[key] = value
            return None
        return super().__setattr__(key, value)

    def __getattr__(self, item: str) -> Any:
        if item in options_builtin_fields:
            return super().__getattribute__(item)
        if self.data is not None and item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        return super().__getattribute__(item)

    def set(self, key: str, value: Any, is_api: bool = False, run_callbacks: bool = True) -> bool:
        """modules/options.py:L144: set `key`, run its onchange; True if the value changed."""
        oldval = self.data.get(key, None)
        if oldval == value:
            return False
        option = self.data_labels[key]
        if option.do_not_save:
            return False
        if is_api and option.restrict_api:
            return False
        try:
            setattr(self, key, value)
        except RuntimeError:
            return False
        if run_callbacks and option.onchange is not None:
            try:
                option.onchange()
            except Exception as e:
                errors.display(e, f"changing setting {key} to {value}")
                setattr(self, key, oldval)
                return False
        return True

    def get_default(self, key: str) -> Any:
        """modules/options.py:L173."""
        data_label = self.data_labels.get(key)
        if data_label is None:
            return None
        return data_label.default

    def save(self, filename: str) -> None:
        """modules/options.py:L182: write the values as JSON."""
        assert not cmd_opts.freeze_settings, "saving settings is disabled"
        with open(filename, "w", encoding="utf8") as file:
            json.dump(self.data, file, indent=4, ensure_ascii=False)

    def onchange(self, key: str, func: Callable[[], Any], call: bool = True) -> None:
        """modules/options.py:L229: set `key`'s onchange callback (and call it once now)."""
        item = self.data_labels.get(key)
        item.onchange = func
        if call:
            func()

    def add_option(self, key: str, info: OptionInfo) -> None:
        """modules/options.py:L256: register a setting (keeps a value already loaded)."""
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default

    def cast_value(self, key: str, value: Any) -> Any:
        """modules/options.py:L297: `value` converted to the type of `key`'s default."""
        if value is None:
            return None
        default_value = self.data_labels[key].default
        if default_value is None:
            default_value = getattr(self, key, None)
        if default_value is None:
            return None
        expected_type = type(default_value)
        if expected_type == bool and value == "False":
            return False
        return expected_type(value)
