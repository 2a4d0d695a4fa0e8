'use strict';
/*
 * Polaris client HTTP API (the polaris-http port) against the gRPC API of
 * the same Lodestar: what one protocol writes the other reads. Bodies are
 * the proto3 JSON mapping of the Polaris messages, sent the way Polaris's
 * HTTP clients and documentation write them (snake_case field names,
 * wrappers as bare values); HTTP status is the first three digits of the
 * Polaris code.
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startLodestar, httpRequest, waitFor } = require('../lib/lodestar');
const P = require('../lib/polaris');

const { Code } = P.load();
const { S, unwrap } = P;
const NS = 'default';

let ls = null;
let cl = null;

before(async () => {
  ls = await startLodestar();
  cl = P.clients(ls.address('polaris-grpc-naming'));
});

after(async () => {
  if (cl) cl.close();
  if (ls) await ls.stop();
});

const sha1 = (s) => crypto.createHash('sha1').update(s).digest('hex');
const uniq = (prefix) => `${prefix}-${crypto.randomBytes(4).toString('hex')}`;

function post(path, body) {
  return httpRequest(ls.port('polaris-http'), 'POST', path, body);
}

/* Checks the JSON answer's code and that the HTTP status is its first three digits. */
function expectCode(res, want, what) {
  assert.ok(res.json, `${what}: a JSON body (HTTP ${res.status}: ${res.text})`);
  assert.equal(res.json.code, want, `${what}: ${res.text}`);
  assert.equal(res.status, Math.floor(want / 1000), `${what}: HTTP status from the code (${res.text})`);
}

/* POST /v1/Discover until accept(json) holds (the replica follows the
 * worker's change stream). */
async function httpDiscoverUntil(what, type, service, accept) {
  let last = null;
  await waitFor(what, async () => {
    last = await post('/v1/Discover', { type, service: { name: service, namespace: NS } });
    return last.json && accept(last.json);
  }).catch((e) => {
    e.message += `\nlast answer: HTTP ${last && last.status} ${last && last.text}`;
    throw e;
  });
  return last;
}

async function grpcDiscoverUntil(stream, what, service, accept) {
  let last = null;
  await waitFor(what, async () => {
    last = await stream.ask(P.discoverRequest('INSTANCE', NS, service, ''));
    return accept(last);
  }).catch((e) => {
    e.message += `\nlast answer: ${JSON.stringify(last)}`;
    throw e;
  });
  return last;
}

test('registered over gRPC, discovered over HTTP POST /v1/Discover', async () => {
  const svc = uniq('g2h-svc');
  const reg = await P.unary(cl.naming, 'RegisterInstance', {
    namespace: S(NS),
    service: S(svc),
    host: S('10.4.0.1'),
    port: S(8443),
    service_token: S('interop-token'),
    protocol: S('https'),
    metadata: { zone: 'a' },
    health_check: { type: 'HEARTBEAT', heartbeat: { ttl: S(5) } },
  });
  assert.equal(unwrap(reg.code), Code.ExecuteSuccess, JSON.stringify(reg));
  const id = unwrap(reg.instance.id);

  const res = await httpDiscoverUntil('HTTP discover lists the instance', 'INSTANCE', svc, (j) =>
    j.code === Code.ExecuteSuccess && (j.instances || []).some((i) => i.id === id),
  );
  expectCode(res, Code.ExecuteSuccess, 'POST /v1/Discover');
  const j = res.json;
  assert.equal(j.type, 'INSTANCE');
  assert.equal(j.service.name, svc);
  assert.equal(j.service.namespace, NS);
  assert.ok(j.service.revision, 'the answer carries the revision');
  const inst = j.instances.find((i) => i.id === id);
  assert.equal(inst.host, '10.4.0.1');
  assert.equal(inst.port, 8443, 'UInt32Value as a bare JSON number');
  assert.equal(inst.protocol, 'https');
  assert.deepEqual(inst.metadata, { zone: 'a' });
  const hc = inst.healthCheck || inst.health_check;
  assert.ok(hc, `health check in ${JSON.stringify(inst)}`);
  assert.equal(hc.type, 'HEARTBEAT');
  assert.equal(hc.heartbeat.ttl, 5);

  /* the same revision over gRPC: both gateways serve the same data */
  const stream = new P.DiscoverStream(cl.naming);
  const g = await stream.ask(P.discoverRequest('INSTANCE', NS, svc, j.service.revision));
  assert.equal(unwrap(g.code), Code.DataNoChange, `gRPC with the HTTP revision: ${JSON.stringify(g)}`);
  await stream.close();
});

test('registered over HTTP /v1/RegisterInstance, discovered over gRPC; heartbeat and deregister over HTTP', async () => {
  const svc = uniq('h2g-svc');
  const host = '10.5.0.1';
  const port = 9000;
  const body = {
    namespace: NS,
    service: svc,
    host,
    port,
    service_token: 'interop-token',
    version: '2.0.0',
    weight: 80,
    metadata: { via: 'http' },
    location: { region: 'ap', zone: 'ap-1', campus: 'c2' },
    enable_health_check: true,
    health_check: { type: 'HEARTBEAT', heartbeat: { ttl: 5 } },
  };
  const reg = await post('/v1/RegisterInstance', body);
  expectCode(reg, Code.ExecuteSuccess, 'POST /v1/RegisterInstance');
  const id = sha1(`${NS}##${svc}##${host}##${port}`);
  assert.equal(reg.json.instance && reg.json.instance.id, id, 'the computed Polaris id is returned');

  const stream = new P.DiscoverStream(cl.naming);
  const g = await grpcDiscoverUntil(stream, 'gRPC discover lists the HTTP registration', svc, (r) =>
    unwrap(r.code) === Code.ExecuteSuccess && (r.instances || []).some((i) => unwrap(i.id) === id),
  );
  const inst = g.instances.find((i) => unwrap(i.id) === id);
  assert.equal(unwrap(inst.host), host);
  assert.equal(unwrap(inst.port), port);
  assert.equal(unwrap(inst.version), '2.0.0');
  assert.equal(unwrap(inst.weight), 80);
  assert.deepEqual(inst.metadata, { via: 'http' });
  assert.equal(unwrap(inst.location.region), 'ap');
  assert.equal(unwrap(inst.location.zone), 'ap-1');
  assert.equal(unwrap(inst.location.campus), 'c2');
  assert.equal(inst.health_check.type, 'HEARTBEAT');
  assert.equal(unwrap(inst.health_check.heartbeat.ttl), 5);
  const rev = unwrap(g.service.revision);

  const hb = await post('/v1/Heartbeat', { namespace: NS, service: svc, host, port, service_token: 'interop-token' });
  expectCode(hb, Code.ExecuteSuccess, 'POST /v1/Heartbeat');

  const dereg = await post('/v1/DeregisterInstance', { namespace: NS, service: svc, host, port, service_token: 'interop-token' });
  expectCode(dereg, Code.ExecuteSuccess, 'POST /v1/DeregisterInstance');

  const gone = await grpcDiscoverUntil(stream, 'gRPC discover no longer lists it', svc, (r) =>
    unwrap(r.code) === Code.ExecuteSuccess && !(r.instances || []).some((i) => unwrap(i.id) === id),
  );
  assert.notEqual(unwrap(gone.service.revision), rev, 'the revision moved');
  await stream.close();
});

test('HTTP ReportClient answers success', async () => {
  const res = await post('/v1/ReportClient', { host: '127.0.0.1', type: 'SDK', version: 'v1.7.0' });
  expectCode(res, Code.ExecuteSuccess, 'POST /v1/ReportClient');
});

test('HTTP error codes: invalid port, unknown service, malformed JSON', async () => {
  const bad = await post('/v1/RegisterInstance', { namespace: NS, service: uniq('bad-svc'), host: '10.6.0.1', port: 70000 });
  expectCode(bad, Code.InvalidInstancePort, 'port 70000');

  const unknown = uniq('no-such-svc');
  const d = await post('/v1/Discover', { type: 'INSTANCE', service: { name: unknown, namespace: NS } });
  assert.ok(d.json, `JSON body: ${d.text}`);
  assert.ok([Code.NotFoundService, Code.NotFoundResource].includes(d.json.code), `unknown service: ${d.text}`);
  expectCode(d, d.json.code, 'unknown service');
  assert.equal(d.json.service && d.json.service.name, unknown, 'the answer names the service asked for');

  const broken = await post('/v1/RegisterInstance', '{"service": "x", "port": ');
  expectCode(broken, Code.ParseException, 'malformed JSON');
});
