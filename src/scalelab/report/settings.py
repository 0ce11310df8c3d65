"""The report's settings: `scalelab report --spec JSON`, parsed into a frozen `ReportSettings`.

The spec is the config's `report:` section as one JSON object (workflow/rules/report.smk passes
it as a single param, so a changed setting reruns the report). Each setting has its one default
here; an unknown key or a value of the wrong type is one line naming the key. The input and
output paths are not settings: they are flags of their own. Standard library only.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from ..errors import ScalelabError


@dataclass(frozen=True)
class ReportSettings:
    title: str = "scalelab study"  # the page title and the first line of the summary (config: report.title)

    @classmethod
    def from_spec(cls, text: str | None, what: str = "--spec") -> "ReportSettings":
        """Parse a JSON object of settings; absent keys keep their defaults."""
        if text is None or not text.strip():
            return cls()
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScalelabError(f"{what}: not valid JSON ({exc})") from None
        if not isinstance(spec, dict):
            raise ScalelabError(f"{what}: should be a JSON object of report settings, got {type(spec).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in spec.items():
            if key not in fields:
                raise ScalelabError(f"{what}: unknown report setting '{key}' (known: {', '.join(fields)})")
            expected = type(fields[key].default)
            if type(value) is not expected:
                raise ScalelabError(f"{what}: report setting '{key}' should be a {expected.__name__}, "
                                    f"got {json.dumps(value)}")
        return cls(**spec)

    def to_spec(self) -> str:
        """The canonical JSON of these settings (what --spec takes)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)
