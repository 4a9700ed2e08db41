"""The Documented Data Extract (DDE): mapping profiles and a rule pack, described for people.

NHS England's Data Migration Standard asks the outgoing supplier for a Documented Data
Extract: the physical model (files, columns, types, formats), the logical model (tables,
keys, relationships), what each code means and the business rules applied. handover holds
all of it as configuration, so ``describe`` builds the DDE from the profiles and the pack
alone (no data is read) and ``write_dde`` renders it as Markdown and as one self-contained
HTML page. Generated, never hand-written: a changed profile changes its DDE, and a test
compares each shipped profile's DDE in ``docs/dde/`` with a fresh rendering.

Per source file, every column the profile reads: the canonical field it fills, its type
and format, its value map (source code → canonical value), whether it is required, what
happens to a value that does not parse, and which rules its values can change (followed
through derived columns and features, ``migrate.rules.reads``). Deterministic: no dates,
no absolute paths (files are named, not located); the same configuration gives the same
bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from migrate import canonical
from migrate.rules.cohorts import PATIENT_ROLLUPS
from migrate.rules.features import PATIENT_FEATURES, REFERRAL_FEATURES
from migrate.fhir.options import CODE_SYSTEMS
from migrate.outputs import write_text
from migrate.profile import FieldSpec, Profile, TableSpec
from migrate.quarantine import REASON_CODES
from migrate.reports import html
from migrate.resources import reports_dir
from migrate.rules.explain import explain_rule, producer, rule_reads
from migrate.rules.model import RulePack
from migrate.rules.reads import canonical_reads, direct_rules_by_field, evidence_by_field, rules_by_field

HTML_TEMPLATE = "dde.html.j2"
MARKDOWN_TEMPLATE = "dde.md.j2"
SYSTEM_NAMES = {"snomed": "SNOMED CT", "read2": "Read v2", "ctv3": "CTV3 (Read v3)",
                "local": "the outgoing provider's local codes"}
# Keys a table takes from another field when the profile does not map them (migrate.mapping).
# Fields the batch fills itself when the profile leaves them out (migrate.integrity).
FILLED = {("contacts", "patient_key"): "its referral's patient"}
# (table, field) -> (rules reading it in their own condition, the rules depending on those)
FieldRules = Mapping[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]]
DEFAULT_KEYS = {"patients": ("patient_key", "source_patient_id"), "referrals": ("referral_key", "source_referral_id")}
# What a sharing setting's values mean (docs/domain.md section 4).
SHARING_MEANINGS = {"dissent": "dissent: blocks the transfer of the clinical history",
                    "consent": "consent: lifts an earlier dissent",
                    "opt_out": "national data opt-out: evidence only, never a block"}


def describe(profiles: Sequence[Profile], pack: RulePack) -> dict[str, Any]:
    """The DDE of ``profiles`` (in --mapping order) read with ``pack``, as plain data."""
    by_field = _field_rules(pack)
    evidence = evidence_by_field(pack)
    return {
        "title": "Documented Data Extract: " + " + ".join(p.name for p in profiles),
        "profiles": [_profile(p, by_field, evidence) for p in profiles],
        "logical_model": _logical_model(profiles, by_field),
        "rule_pack": _pack(pack),
        "codelists": _codelists(pack),
    }


def _field_rules(pack: RulePack) -> dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]]:
    """(table, field) -> (rules reading it directly, the rules that depend on those), pack order."""
    direct = direct_rules_by_field(pack)
    every = rules_by_field(pack)
    return {key: (direct.get(key, ()), tuple(r for r in ids if r not in direct.get(key, ())))
            for key, ids in every.items()}


def _profile(profile: Profile, by_field: FieldRules,
             evidence: Mapping[tuple[str, str], tuple[str, ...]]) -> dict[str, Any]:
    return {
        "name": profile.name, "sha256": profile.sha256, "source_system": profile.source_system,
        "description": profile.description, "null_values": list(profile.null_values),
        "files": [_file(spec, by_field, evidence) for name in canonical.TABLES
                  if (spec := profile.tables.get(name)) is not None],
    }


def _file(spec: TableSpec, by_field: FieldRules,
          evidence: Mapping[tuple[str, str], tuple[str, ...]]) -> dict[str, Any]:
    table = canonical.TABLES[spec.name]
    mapped = {f.name for f in spec.fields}
    default_key = DEFAULT_KEYS.get(spec.name)
    unmapped = [f.name for f in table.fields if f.name not in mapped
                and not (default_key and f.name == default_key[0]) and (spec.name, f.name) not in FILLED]
    return {
        "table": spec.name, "files": list(spec.files),
        "format": "CSV or Parquet by file suffix" if spec.format == "auto" else spec.format,
        "layout": _layout(spec),
        "events": list(spec.events), "on_duplicate": spec.on_duplicate,
        "updates": (None if spec.name in canonical.REFERENCE_TABLES  # a reference file's rows update nothing
                    else "a blank field keeps the earlier value, the explicit null \"\" clears it"
                    if spec.updates == "merge" else "every mapped field takes the later row's value"),
        "given_by": canonical.REFERENCE_TABLES.get(spec.name),
        "columns": [_column(spec.name, f, by_field, evidence) for f in spec.fields],
        "key": table.key, "key_from": default_key[1] if default_key and default_key[0] not in mapped else None,
        "filled": [{"field": f, "from": how} for (t, f), how in FILLED.items() if t == spec.name and f not in mapped],
        "not_mapped": [{"field": name, "rules": [r for part in by_field.get((spec.name, name), ((), ())) for r in part]}
                       for name in unmapped],
    }


def _layout(spec: TableSpec) -> list[str]:
    """How the file is read, in words (delimited text only: Parquet and HL7 carry their own)."""
    if spec.format in ("parquet", "hl7v2"):
        return []
    quote = "no quoting" if spec.quote_char is None else f"quote character {spec.quote_char!r}"
    bad = "rows with bytes not valid in it are quarantined" if spec.on_encoding_error == "quarantine" else \
        "bytes not valid in it are replaced (U+FFFD)"
    return [f"encoding {spec.encoding} ({bad})", f"delimiter {spec.delimiter!r}", quote]


def _source(spec: FieldSpec) -> str:
    """Where the field's value comes from, in words."""
    if spec.constant is not None:
        return f"the constant {spec.constant!r}"
    if spec.split is not None:
        part = f"parts {spec.split.index} onwards" if spec.split.rest else f"part {spec.split.index}"
        return f"{part} of {spec.split.column} split on {spec.split.sep!r} (counted from 0)"
    if spec.columns:
        return " + ".join(spec.columns) + f" (joined with {spec.sep!r}, blanks skipped)"
    return str(spec.column)


def _format(spec: FieldSpec, field: canonical.Field) -> list[str]:
    """The parsing and cleaning the profile applies, one phrase each."""
    out: list[str] = []
    if field.kind == "sharing":
        if spec.date:
            out.append(f"the date it was set from {spec.date}, formats " + ", ".join(spec.formats)
                       + " (tried in order)")
        out.append("values matched in any case")
    elif spec.formats:
        out.append("formats " + ", ".join(spec.formats) + " (tried in order)")
    if field.kind == "boolean":
        out.append(f"true: {', '.join(spec.true_values)}; false: {', '.join(spec.false_values)}")
    if field.kind == "list":
        out.append(f"a list separated by {spec.separator!r}")
    if spec.remove:
        out.append(f"characters {spec.remove!r} removed")
    if spec.case:
        out.append(f"{spec.case} case")
    if spec.pattern:
        out.append(f"must match {spec.pattern}")
    if not spec.trim:
        out.append("surrounding spaces kept")
    return out


def _column(table: str, spec: FieldSpec, by_field: FieldRules,
            evidence: Mapping[tuple[str, str], tuple[str, ...]]) -> dict[str, Any]:
    field = canonical.TABLES[table].field(spec.name)
    if field.kind == "sharing":
        invalid = ("a value in none of the lists is kept as unrecognised: treated as a dissent (SHARING_BLOCK) and "
                   "reported, never dropped" + ("; a date in none of the formats quarantines the row "
                                                "(unparseable_date)" if spec.date and spec.on_invalid != "null"
                                                else "; a date in none of the formats leaves it undated"
                                                if spec.date else ""))
    elif spec.on_invalid == "null":
        invalid = "a value that does not parse becomes blank (on_invalid: null)"
    elif spec.map_only:
        invalid = "a value without a mapping quarantines the row (unmapped_code)"
    else:
        invalid = {"date": "a date in none of the formats quarantines the row (unparseable_date)",
                   "datetime": "a date-time in none of the formats quarantines the row (unparseable_date)",
                   "enum": "a value that is not a canonical value after mapping quarantines the row (unmapped_code)",
                   "boolean": "a value in neither list quarantines the row (invalid_value)",
                   }.get(field.kind, "a value not matching the pattern quarantines the row (invalid_value)"
                         if spec.pattern else "kept as text")
    return {
        "source": _source(spec), "source_columns": list(spec.source_columns), "field": spec.name,
        "type": field.kind, "pii": field.pii, "format": _format(spec, field),
        "value_map": [{"code": code, "meaning": meaning} for code, meaning in spec.map]
        + [{"code": value, "meaning": SHARING_MEANINGS[kind]}
           for values, kind in ((spec.dissent_values, "dissent"), (spec.consent_values, "consent"),
                                (spec.opt_out_values, "opt_out")) for value in values],
        "refine": None if spec.refine is None else {
            "column": spec.refine.column, "when": list(spec.refine.when),
            "value_map": [{"code": code, "meaning": meaning} for code, meaning in spec.refine.map]},
        "implied_by": None if spec.implied_by is None else {
            "column": spec.implied_by.column, "own": ", ".join(spec.base_columns),
            "value_map": [{"code": code, "meaning": meaning} for code, meaning in spec.implied_by.map]},
        "map_only": spec.map_only, "allowed": list(field.enum_values or ()),
        "required": spec.required, "invalid": invalid,
        "rules": list(by_field.get((table, spec.name), ((), ()))[0]),
        "through": list(by_field.get((table, spec.name), ((), ()))[1]),
        "evidence_of": list(evidence.get((table, spec.name), ())),
    }


def _logical_model(profiles: Sequence[Profile], by_field: FieldRules
                   ) -> dict[str, Any]:
    """The canonical tables the profiles fill: fields, keys and references."""
    mapped = [name for name in canonical.TABLES if any(name in p.tables for p in profiles)]
    tables = []
    for name in mapped:
        table = canonical.TABLES[name]
        tables.append({
            "name": name, "key": table.key,
            "fields": [{"name": f.name, "type": f.kind, "allowed": list(f.enum_values or ()), "pii": f.pii,
                        "mapped_by": [p.name for p in profiles if name in p.tables
                                      and any(s.name == f.name for s in p.tables[name].fields)],
                        "rules": sum(len(part) for part in by_field.get((name, f.name), ((), ())))}
                       for f in table.fields],
            "references": [{"column": column, "table": parent, "key": key} for column, parent, key in table.parents],
        })
    return {"tables": tables, "trace": list(canonical.SOURCE_COLUMNS),
            "quarantine_reasons": [{"code": c, "meaning": m} for c, m in REASON_CODES.items()]}


def _pack(pack: RulePack) -> dict[str, Any]:
    names = {str(path): path.name for path, _ in pack.files}

    def local(text: str) -> str:  # pack files by name, never by where they sit on this machine
        for full, name in names.items():
            text = text.replace(full, name)
        return text

    return {
        "name": pack.name, "version": pack.version, "description": pack.description, "sha256": pack.sha256,
        "files": [{"name": path.name, "sha256": digest} for path, digest in pack.files],
        "thresholds": [{"name": t.name, "value": t.value, "source": Path(t.source).name}
                       for t in pack.thresholds.values()],
        "cohort_precedence": list(pack.cohort_precedence),
        "rules": [{"id": r.id, "kind": r.kind, "outcome": r.flag or r.derive, "severity": r.severity,
                   "applies_to": r.applies_to, "title": r.title, "text": local(explain_rule(pack, r)),
                   "fields": [f"{t}.{c}" for t, c in canonical_reads(pack, r).fields],
                   "undeclared": list(canonical_reads(pack, r).undeclared)} for r in pack.rules],
    }


def _codelists(pack: RulePack) -> list[dict[str, Any]]:
    """Every codelist with its values (per code system where it has them) and the rules using it."""
    users: dict[str, list[str]] = {}
    features = {"referral": REFERRAL_FEATURES, "patient": {**PATIENT_FEATURES, **PATIENT_ROLLUPS}}
    for rule in pack.rules:
        reads = rule_reads(pack, rule)
        rules = [rule] + [p for level, name in reads if (p := producer(pack, level, name)) is not None]
        names = [u.split(".")[1] for r in rules for u in r.uses if u.startswith("codelists.")]
        names += [c for level, name in reads if name in features[level] for c in features[level][name].codelists]
        for name in dict.fromkeys(names):
            users.setdefault(name, []).append(rule.id)
    out = []
    for name, codelist in sorted(pack.codelists.items()):
        systems = [{"system": s, "name": SYSTEM_NAMES.get(s, s), "uri": CODE_SYSTEMS.get(s), "codes": list(codes)}
                   for s, codes in (codelist.by_system or {}).items()]
        out.append({"name": name, "source": Path(codelist.source).name, "entries": [] if systems else
                    list(codelist.values), "systems": systems, "used_by": users.get(name, [])})
    return out


def _markdown_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, line breaks as <br>."""
    return str(value).replace("|", "\\|").replace("\n", "<br>")


def render_markdown(dde: Mapping[str, Any]) -> str:
    """The DDE as Markdown (GitHub tables), for docs/ and review in a pull request."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(reports_dir()), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["cell"] = _markdown_cell
    return env.get_template(MARKDOWN_TEMPLATE).render(d=dde)


def render_html(dde: Mapping[str, Any]) -> str:
    """The DDE as one self-contained page (inline CSS, no scripts; opens offline)."""
    return html.environment().get_template(HTML_TEMPLATE).render(d=dde)


def write_dde(profiles: Sequence[Profile], pack: RulePack, out_dir: Path) -> list[Path]:
    """Write ``<name>.md`` and ``<name>.html`` into ``out_dir`` (name: the profiles joined by +)."""
    dde = describe(profiles, pack)
    stem = re.sub(r"[^0-9A-Za-z._+-]", "-", "+".join(p.name for p in profiles))
    return [write_text(render_markdown(dde), out_dir / f"{stem}.md"),
            write_text(render_html(dde), out_dir / f"{stem}.html")]
