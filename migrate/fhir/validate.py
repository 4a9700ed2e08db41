"""Validation of every resource before it is written; failures are listed, never dropped.

Three checks, each giving a problem text (no patient values in it) or null per resource:

1. **values** (``problems``, computed with the JSON by ``migrate.fhir.template``): every
   value taken from the data matches its FHIR primitive type's regex (string, code, id,
   uri, date, dateTime, instant — ``string`` also refuses control characters, ``id`` more
   than 64 characters) or comes from its value set (gender, statuses, priorities,
   verification codes); required values are present; local times exist.
2. **structure** (``fhir.resources`` R4B models): resources built by one template differ
   only in values and in which optional elements are present — their *shape*. One resource
   per (type, shape) is validated with the pydantic model (element names, cardinality,
   types, required elements, the model's own value checks); its verdict holds for every
   resource of that shape (if it fails, each resource of the shape is validated on its
   own: see ``ShapeCache``). ``validation="full"`` validates every resource with the model
   instead (the slow reference path; tests show the fast path rejects whatever it rejects
   on our resources).
3. **references**: every ``Type/id`` a resource references is a resource of the same
   bundle batch or a valid Organization of the run.

A patient with any failing resource is not written at all (a receiving server would reject
a transaction with a dangling or invalid entry): ``errors`` lists each failing resource
with its problem and every source row of that patient's resources with why it was held.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import polars as pl
from pydantic import ValidationError

ERROR_SCHEMA: dict[str, pl.DataType] = {
    "fhir_type": pl.String(), "fhir_id": pl.String(), "patient_key": pl.String(), "problem": pl.String(),
    "source_file": pl.String(), "source_row": pl.Int64(), "table": pl.String(),
}


@cache
def model(resource_type: str) -> Any:
    """The fhir.resources R4B model class of ``resource_type`` (never the R5 default)."""
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def model_problem(resource_type: str, text: str) -> str | None:
    """Null if the R4B model accepts ``text``, else its errors (locations and messages only)."""
    try:
        model(resource_type).model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        shown = "; ".join(f"{resource_type}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return f"R4B model: {shown}{more}"
    except ValueError as exc:  # malformed JSON would be a template bug; report it, do not crash
        return f"R4B model: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


@dataclass
class ShapeCache:
    """Model verdicts per (resource type, shape), kept across the batches of a run.

    The representative of a shape is its first resource (by id) whose values pass the
    value checks, so one bad value cannot condemn the resources that share its shape. If
    the representative still fails the model, the shape is *suspect*: every resource of it
    is then validated on its own, so a verdict never rests on another resource's values.
    """

    verdicts: dict[tuple[str, str], str | None] = field(default_factory=dict)
    validated: int = 0  # resources passed through the model
    individually: int = 0  # of which resources of a suspect shape, each validated on its own

    def problems(self, resources: pl.DataFrame) -> pl.Series:
        """The model's verdict for each resource (null: accepted)."""
        built = resources.filter(pl.col("json").is_not_null())
        candidates = (built.sort("fhir_type", "shape", pl.col("problems").is_not_null(), "fhir_id")
                      .group_by("fhir_type", "shape", maintain_order=True).agg(pl.col("json").first()))
        for resource_type, shape, text in candidates.iter_rows():
            if (resource_type, shape) not in self.verdicts:
                self.verdicts[(resource_type, shape)] = model_problem(resource_type, text)
                self.validated += 1
        table = pl.DataFrame(
            [(t, s, p) for (t, s), p in self.verdicts.items()],
            schema={"fhir_type": pl.String, "shape": pl.String, "model_problem": pl.String}, orient="row")
        verdict = resources.select("fhir_type", "shape", "json").join(
            table, on=["fhir_type", "shape"], how="left", maintain_order="left")
        suspect = verdict["model_problem"].is_not_null() & verdict["json"].is_not_null()
        if not suspect.any():
            return verdict["model_problem"]
        own = full_problems(verdict.filter(suspect))
        self.validated += own.len()
        self.individually += own.len()
        return pl.Series("model_problem", [None] * verdict.height, dtype=pl.String).scatter(suspect.arg_true(), own)


def full_problems(resources: pl.DataFrame) -> pl.Series:
    """The R4B model verdict of every resource (slow: about 8,000 resources/s per core)."""
    return pl.Series("model_problem", [
        None if text is None else model_problem(rt, text)
        for rt, text in resources.select("fhir_type", "json").iter_rows()
    ], dtype=pl.String)


def reference_problems(resources: pl.DataFrame, known: Iterable[pl.Series]) -> pl.Series:
    """For each resource, the references that resolve to nothing in ``resources`` or ``known``."""
    own = (pl.col("fhir_type") + "/" + pl.col("fhir_id")).alias("ref")
    targets = pl.concat([resources.select(own), *[s.rename("ref").to_frame() for s in known]]).unique()
    refs = resources.select(pl.int_range(pl.len()).alias("i"), "refs").explode("refs").drop_nulls("refs")
    dangling = (refs.join(targets, left_on="refs", right_on="ref", how="anti")
                .group_by("i").agg(pl.col("refs").sort().str.join(", ")))
    return (pl.DataFrame({"i": pl.int_range(resources.height, eager=True)})
            .join(dangling, on="i", how="left", maintain_order="left")
            .select(pl.when(pl.col("refs").is_not_null()).then(pl.lit("reference(s) resolve to no resource: ")
                                                                 + pl.col("refs")))
            .to_series())


@dataclass(frozen=True)
class Checked:
    """Resources that passed (``resources``), their lineage, and ``errors`` (ERROR_SCHEMA)."""

    resources: pl.DataFrame
    lineage: pl.DataFrame
    errors: pl.DataFrame


def validate(resources: pl.DataFrame, lineage: pl.DataFrame, known: Iterable[pl.Series], shapes: ShapeCache,
             full: bool = False) -> Checked:
    """Run the three checks; drop every resource of a patient with a failing resource."""
    model_col = full_problems(resources) if full else shapes.problems(resources)
    if full:
        shapes.validated += resources.height
    refs_col = reference_problems(resources, known)
    checked = resources.with_columns(
        pl.concat_str([pl.col("problems"), model_col.alias("m"), refs_col.alias("r")], separator="; ",
                      ignore_nulls=True).alias("problem"))
    checked = checked.with_columns(pl.when(pl.col("problem") != "").then(pl.col("problem")).alias("problem"))
    failing = checked.filter(pl.col("problem").is_not_null())
    if failing.height == 0:
        return Checked(resources.drop("problems", "refs", "shape"), lineage, pl.DataFrame(schema=ERROR_SCHEMA))
    # A resource without a patient (Organization, Provenance) fails alone.
    bad_patients = failing.filter(pl.col("patient_key").is_not_null())["patient_key"].unique()
    dropped = pl.col("patient_key").is_in(bad_patients.implode()) | pl.col("problem").is_not_null()
    held = checked.filter(dropped)
    first = failing.sort("fhir_type", "fhir_id").group_by("patient_key", maintain_order=True).agg(
        (pl.col("fhir_type") + "/" + pl.col("fhir_id")).first().alias("culprit"))
    reasons = held.join(first, on="patient_key", how="left").select(
        "fhir_type", "fhir_id", "patient_key",
        pl.coalesce(pl.col("problem"), pl.lit("not written: another resource of this patient failed validation (")
                    + pl.col("culprit") + pl.lit(")")).alias("problem"))
    errors = (
        reasons.join(lineage.select("fhir_type", "fhir_id", "source_file", "source_row", "table").unique(),
                     on=["fhir_type", "fhir_id"], how="left")
        .select(list(ERROR_SCHEMA)).cast(ERROR_SCHEMA)  # type: ignore[arg-type]
        .sort("fhir_type", "fhir_id", "source_file", "source_row", nulls_last=True)
    )
    kept = checked.filter(~dropped).drop("problems", "refs", "shape", "problem")
    kept_lineage = (lineage.join(held.select("fhir_type", "fhir_id"), on=["fhir_type", "fhir_id"], how="anti")
                    .join(errors.select("source_file", "source_row").drop_nulls().unique(),
                          on=["source_file", "source_row"], how="anti"))
    return Checked(kept, kept_lineage, errors)
