"""File-name templates and the known acquisition layouts (presets).

:func:`compile_template` turns a template such as
``BBBC006_v1_images_z_{z}/mcf-z-stacks-*_{well}_s{site}_w{channel:\\d}*.tif``
into a regular expression with one named group per field (see
:mod:`plate_refocus.ingest` for the template language); :data:`PRESETS`
holds the known layouts (BBBC006) with their metadata defaults.

References
----------
.. [1] V. Ljosa, K. L. Sokolnicki and A. E. Carpenter, "Annotated
   high-throughput microscopy image sets for validation", Nature Methods
   9(7):637, 2012 (image set BBBC006v1, Broad Bioimage Benchmark Collection).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Preset", "PRESETS", "compile_template", "preset_for", "resolve_pattern"]

# Field name -> the regular expression it matches unless the template gives one.
_FIELD_REGEX = {
    "well": r"[A-Za-z]{1,2}\d{1,3}",
    "row": r"[A-Za-z]{1,2}|\d{1,3}",
    "column": r"\d{1,3}",
    "site": r"\d+",
    "channel": r"[^/]+?",
    "z": r"\d+",
    "t": r"\d+",
}


@dataclass(frozen=True)
class Preset:
    """A known acquisition layout: its file template and its metadata defaults.

    Parameters
    ----------
    name : str
        The name used as ``preset=`` / ``--preset``.
    template : str
        The file-name template (see the :mod:`plate_refocus.ingest` docstring).
    pixel_size_um : float
        Pixel size at the sample in um.
    z_step_um : float
        Distance between consecutive planes in um.
    focal_plane : int or None
        The plane number (as in the file names) that is in focus.
    channel_names : dict of str to str
        Channel value in the file names -> channel name in the plate.
    bit_depth : int, optional
        The camera's bit depth (the data range of PSNR/SSIM); stored as the
        plate's camera metadata.
    """

    name: str
    template: str
    pixel_size_um: float
    z_step_um: float
    focal_plane: int | None
    channel_names: Mapping[str, str] = field(default_factory=dict)
    bit_depth: int | None = None


#: Known layouts. BBBC006v1 [1]_: one folder per z-plane, 2 um apart, plane 16
#: in focus; 20x objective and 6 um camera pixels, i.e. 0.3 um at the sample;
#: w1 Hoechst 33342 (nuclei), w2 phalloidin (actin). Each file name ends in a
#: uuid that differs between planes, matched by the ``*``.
PRESETS: dict[str, Preset] = {
    "bbbc006": Preset(
        name="bbbc006",
        template=r"BBBC006_v1_images_z_{z}/mcf-z-stacks-*_{well}_s{site}_w{channel:\d}*.tif",
        pixel_size_um=0.3,
        z_step_um=2.0,
        focal_plane=16,
        channel_names={"1": "Hoechst", "2": "phalloidin"},
        bit_depth=12,
    ),
}


def compile_template(template: str) -> re.Pattern[str]:
    """Compile a file-name template into a regular expression.

    Parameters
    ----------
    template : str
        Path relative to the source folder with ``{field}`` or
        ``{field:regex}`` placeholders and ``*`` wildcards (see the
        :mod:`plate_refocus.ingest` docstring).

    Returns
    -------
    re.Pattern
        Case-insensitive, to be used with ``fullmatch`` on the relative
        POSIX path; one named group per field.

    Raises
    ------
    ValueError
        For an unknown or repeated field, unbalanced braces, an invalid
        regex, or a template that locates no well.
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__} {template!r}")
    parts: list[str] = []
    seen: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char == "*":
            parts.append(r"[^/]*?")
            i += 1
        elif char == "{":
            depth, j = 1, i + 1
            while j < len(template) and depth:
                depth += {"{": 1, "}": -1}.get(template[j], 0)
                j += 1
            if depth:
                raise ValueError(f"unbalanced '{{' at position {i} in template {template!r}")
            name, _, regex = template[i + 1 : j - 1].partition(":")
            if name not in _FIELD_REGEX:
                raise ValueError(
                    f"unknown field {{{name}}} in template {template!r}; "
                    f"known fields are {', '.join('{' + f + '}' for f in _FIELD_REGEX)}"
                )
            if name in seen:
                raise ValueError(f"field {{{name}}} appears twice in template {template!r}")
            seen.append(name)
            parts.append(f"(?P<{name}>{regex or _FIELD_REGEX[name]})")
            i = j
        elif char == "}":
            raise ValueError(f"unbalanced '}}' at position {i} in template {template!r}")
        else:
            parts.append(re.escape(char))
            i += 1
    try:
        regex = re.compile("".join(parts), re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"template {template!r} has an invalid regular expression: {error}") from None
    _check_groups(regex, template)
    return regex


def _check_groups(regex: re.Pattern[str], shown: Any) -> None:
    groups = set(regex.groupindex)
    unknown = groups - set(_FIELD_REGEX)
    if unknown:
        raise ValueError(
            f"pattern {shown!r} has unknown named groups {sorted(unknown)}; "
            f"known are {sorted(_FIELD_REGEX)}"
        )
    if "well" in groups and groups & {"row", "column"}:
        raise ValueError(f"pattern {shown!r} gives both {{well}} and {{row}}/{{column}}; use one")
    if "well" not in groups and not {"row", "column"} <= groups:
        raise ValueError(
            f"pattern {shown!r} does not locate the well: it needs {{well}} (like 'a01') "
            "or both {row} and {column}"
        )


def resolve_pattern(preset: str | None, pattern: str | re.Pattern[str] | None) -> tuple[Preset | None, re.Pattern[str], str]:
    """The preset that applies, the compiled pattern and the pattern as shown in messages.

    ``preset`` (a name in :data:`PRESETS`) and ``pattern`` (a template or a
    compiled regex) as :func:`~plate_refocus.ingest.scan` takes them; neither
    given means the BBBC006 preset.
    """
    if preset is not None and not isinstance(preset, str):
        raise TypeError(f"preset must be a str or None, got {preset!r}")
    if preset is not None and preset.lower() not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known presets are {sorted(PRESETS)}")
    chosen = PRESETS[preset.lower()] if preset is not None else None
    if pattern is None and chosen is None:
        chosen = PRESETS["bbbc006"]
    if pattern is None:
        assert chosen is not None
        return chosen, compile_template(chosen.template), chosen.template
    if isinstance(pattern, re.Pattern):
        _check_groups(pattern, pattern.pattern)
        return chosen, pattern, pattern.pattern
    if isinstance(pattern, str):
        return chosen, compile_template(pattern), pattern
    raise TypeError(f"pattern must be a str template or a re.Pattern, got {pattern!r}")


def preset_for(preset: str | None, pattern: str | re.Pattern[str] | None) -> Preset | None:
    """The preset whose metadata defaults apply: ``preset``, or BBBC006 when neither is given."""
    return resolve_pattern(preset, pattern)[0]
