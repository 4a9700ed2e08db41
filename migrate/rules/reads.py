"""Which canonical fields each rule depends on, followed through derived columns and features.

A rule's condition names columns of its level: canonical columns, features computed by
handover (``migrate.features``, ``migrate.cohorts``) and columns derived by the rules above
it. ``canonical_reads`` follows derived columns to the rules that make them and features to
the canonical fields they are computed from (``FEATURE_READS``), so the Documented Data
Extract can say, for every source column, which rules its values can change.

``FEATURE_READS`` is the one statement of what each feature reads. A test holds it to the
code both ways: every feature has an entry, and shuffling a canonical column changes only
the features that list it (tests/rules/test_reads.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from migrate import canonical
from migrate.rules.explain import producer, rule_reads
from migrate.rules.model import Level, Rule, RulePack

_CONTACTS_COUNTED = ("contacts.referral_key", "contacts.attendance", "contacts.contact_datetime", "contacts.slot_name")
# Sharing entries come from coded entries, the patient's own setting, and the setting of the
# practice they are registered at (migrate.sharing; practice_sharing is the --practice-sharing file).
_SETTINGS = ("patients.sharing_out", "patients.gp_ods_code", "practice_sharing.ods_code",
             "practice_sharing.sharing_out")
_SHARING = ("codes.patient_key", "codes.code_system", "codes.code", "codes.recorded_date", *_SETTINGS)
_OPT_OUT = ("codes.patient_key", "codes.code_system", "codes.code", "patients.sharing_out")

# feature -> the fields it is computed from, as "table.field". A referral-level name that is
# not canonical ("referrals.cohort") is a derived referral column: followed to its rule.
FEATURE_READS: dict[Level, dict[str, tuple[str, ...]]] = {
    "referral": {
        "cutover_date": (),
        "open_at_cutover": ("referrals.status", "referrals.closed_date"),
        "attended_before_cutover": _CONTACTS_COUNTED,
        "attended_contact_count": _CONTACTS_COUNTED,
        "first_attended_date": _CONTACTS_COUNTED,
        "last_attended_date": _CONTACTS_COUNTED,
        "booked_after_cutover": _CONTACTS_COUNTED,
        "next_booked_date": _CONTACTS_COUNTED,
        "dummy_slot_contacts": ("contacts.referral_key", "contacts.slot_name"),
        "days_waiting": ("referrals.received_date",),
        "days_to_first_attendance": ("referrals.received_date", *_CONTACTS_COUNTED),
        "days_since_post_op": ("referrals.post_op_date",),
        "has_red_flag_code": ("referrals.red_flags",),
        "unrecognised_red_flags": ("referrals.red_flags",),
        "has_unrecognised_red_flag": ("referrals.red_flags",),
        "out_of_scope_phrase": ("referrals.reason_text",),
        "age_at_cutover": ("referrals.patient_key", "patients.birth_date"),
    },
    "patient": {
        "age_at_cutover": ("patients.birth_date",),
        "sharing_state": _SHARING,
        "sharing_blocked": _SHARING,
        "latest_sharing_code": _SHARING,
        "latest_sharing_date": _SHARING,
        "latest_sharing_source": _SHARING,
        "opt_out_recorded": _OPT_OUT,
        "opt_out_codes": _OPT_OUT,
        # roll-ups of the patient's referrals (migrate.cohorts.PATIENT_ROLLUPS)
        "patient_cohort": ("referrals.patient_key", "referrals.cohort"),
        "referral_count": ("referrals.patient_key",),
        "transfer_lists": ("referrals.patient_key", "referrals.transfer_list"),
        "transfer_list_count": ("referrals.patient_key", "referrals.transfer_list"),
    },
}
_LEVEL_TABLE: dict[Level, str] = {"referral": "referrals", "patient": "patients"}


@dataclass(frozen=True)
class Reads:
    """What one rule's outcome depends on: canonical (table, field) pairs, the features on
    the way, and any feature ``FEATURE_READS`` does not describe (never silently dropped)."""

    fields: tuple[tuple[str, str], ...]
    features: tuple[str, ...]
    undeclared: tuple[str, ...]


def canonical_reads(pack: RulePack, rule: Rule) -> Reads:
    """The canonical fields whose values can change ``rule``'s outcome (see module docstring)."""
    fields: dict[tuple[str, str], None] = {}
    features: dict[str, None] = {}
    undeclared: dict[str, None] = {}
    pending: list[Rule] = [rule]
    seen: set[str] = set()
    while pending:
        current = pending.pop()
        if current.id in seen:
            continue
        seen.add(current.id)
        for level, name in rule_reads(pack, current):
            if producer(pack, level, name) is not None:
                continue  # a derived column: rule_reads has followed it already
            table = _LEVEL_TABLE[level]
            if name in canonical.TABLES[table].field_names:
                fields[(table, name)] = None
            elif name in FEATURE_READS[level]:
                features[name] = None
                direct, rules, unknown = _feature_sources(pack, level, name)
                fields.update(dict.fromkeys(direct))
                pending += rules
                undeclared.update(dict.fromkeys(unknown))
            else:
                undeclared[f"{level}.{name}"] = None
    return Reads(tuple(sorted(fields)), tuple(sorted(features)), tuple(sorted(undeclared)))


def feature_fields(pack: RulePack, level: Level, name: str) -> tuple[tuple[str, str], ...]:
    """Every canonical field feature ``name`` depends on, through the derived columns it reads."""
    direct, rules, _ = _feature_sources(pack, level, name)
    fields = set(direct)
    for rule in rules:
        fields |= set(canonical_reads(pack, rule).fields)
    return tuple(sorted(fields))


def _feature_sources(pack: RulePack, level: Level, name: str
                     ) -> tuple[list[tuple[str, str]], list[Rule], list[str]]:
    """(canonical fields, rules deriving the other columns, references nobody makes) of a feature."""
    direct: list[tuple[str, str]] = []
    rules: list[Rule] = []
    unknown: list[str] = []
    for ref in FEATURE_READS[level][name]:
        source, column = ref.split(".", 1)
        if column in canonical.TABLES[source].field_names:
            direct.append((source, column))
        elif (made_by := producer(pack, "referral", column)) is not None:
            rules.append(made_by)  # a derived referral column a roll-up reads (referrals.cohort)
        else:
            unknown.append(ref)
    return direct, rules, unknown


def direct_fields(pack: RulePack, rule: Rule) -> tuple[tuple[str, str], ...]:
    """The canonical fields ``rule``'s own condition reads, itself or through a feature (not
    through a column another rule derives)."""
    fields: dict[tuple[str, str], None] = {}
    for name in rule.columns:
        table = _LEVEL_TABLE[rule.applies_to]
        if producer(pack, rule.applies_to, name) is not None:
            continue
        if name in canonical.TABLES[table].field_names:
            fields[(table, name)] = None
        elif name in FEATURE_READS[rule.applies_to]:
            fields.update(dict.fromkeys(_feature_sources(pack, rule.applies_to, name)[0]))
    return tuple(sorted(fields))


def rules_by_field(pack: RulePack) -> dict[tuple[str, str], tuple[str, ...]]:
    """(table, field) -> ids of the rules whose outcome the field can change, in pack order."""
    out: dict[tuple[str, str], list[str]] = {}
    for rule in pack.rules:
        for key in canonical_reads(pack, rule).fields:
            out.setdefault(key, []).append(rule.id)
    return {key: tuple(ids) for key, ids in sorted(out.items())}


def direct_rules_by_field(pack: RulePack) -> dict[tuple[str, str], tuple[str, ...]]:
    """(table, field) -> ids of the rules whose own condition reads the field (``direct_fields``);
    ``rules_by_field`` adds the rules that read what these derive."""
    out: dict[tuple[str, str], list[str]] = {}
    for rule in pack.rules:
        for key in direct_fields(pack, rule):
            out.setdefault(key, []).append(rule.id)
    return {key: tuple(ids) for key, ids in sorted(out.items())}


def evidence_by_field(pack: RulePack) -> dict[tuple[str, str], tuple[str, ...]]:
    """(table, field) -> ids of the flag rules that show the field's value as evidence."""
    out: dict[tuple[str, str], list[str]] = {}
    for rule in pack.flag_rules():
        table = _LEVEL_TABLE[rule.applies_to]
        for name in rule.evidence:
            if name in canonical.TABLES[table].field_names:
                out.setdefault((table, name), []).append(rule.id)
    return {key: tuple(ids) for key, ids in sorted(out.items())}
