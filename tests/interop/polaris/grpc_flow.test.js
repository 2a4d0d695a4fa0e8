'use strict';
/*
 * Polaris over gRPC (the naming port), driven the way the official SDKs
 * drive it: grpc-js with our own protos replays, message for message, what
 * polaris-go and polaris-cpp put on the wire (shared/protocols/polaris.md,
 * "What the official SDKs actually send").
 *
 * One Lodestar instance for the whole file; every test uses services of its
 * own so the tests do not depend on each other's order.
 */
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { startLodestar, waitFor } = require('../lib/lodestar');
const P = require('../lib/polaris');

const { Code } = P.load();
const { S, unwrap } = P;
const NS = 'default';
const TOKEN = 'interop-token';

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
const code = (res) => unwrap(res.code);
const ids = (res) => (res.instances || []).map((i) => unwrap(i.id));

/* Ask for `type` on the stream until `accept(answer)` holds (the gateway's
 * replica follows the worker's change stream, so a write shows up shortly
 * after its acknowledgement, not necessarily at once). */
async function discoverUntil(stream, what, type, service, revision, accept) {
  let last = null;
  await waitFor(
    what,
    async () => {
      last = await stream.ask(P.discoverRequest(type, NS, service, revision));
      return accept(last);
    },
    5000,
  ).catch((e) => {
    e.message += `\nlast answer: ${JSON.stringify(last)}`;
    throw e;
  });
  return last;
}

/* What polaris-go's RegisterInstance carries for a provider with a TTL. */
function goRegistration(service, host, port) {
  return {
    namespace: S(NS),
    service: S(service),
    host: S(host),
    port: S(port),
    service_token: S(TOKEN),
    protocol: S('grpc'),
    version: S('1.2.3'),
    weight: S(100),
    metadata: { env: 'interop', lang: 'go' },
    location: { region: S('eu'), zone: S('eu-west'), campus: S('dc1') },
    health_check: { type: 'HEARTBEAT', heartbeat: { ttl: S(5) } },
  };
}

test('grpc.health.v1 Health/Check answers SERVING on the naming and config ports', async () => {
  for (const name of ['polaris-grpc-naming', 'polaris-grpc-config']) {
    const c = P.clients(ls.address(name));
    try {
      const res = await P.unary(c.health, 'Check', { service: '' });
      assert.equal(res.status, 'SERVING', `${name}: ${JSON.stringify(res)}`);
    } finally {
      c.close();
    }
  }
});

test('polaris-go flow: report, register without id, heartbeat by address, discover, deregister', async () => {
  const svc = uniq('go-svc');
  const host = '10.1.2.3';
  const port = 8080;
  const md = { metadata: { 'request-id': uniq('go-req') } };

  const rc = await P.unary(
    cl.naming,
    'ReportClient',
    { host: S('127.0.0.1'), type: 'SDK', version: S('v1.7.0'), id: S(uniq('go-client')), stat: [] },
    md,
  );
  assert.equal(code(rc), Code.ExecuteSuccess, `ReportClient: ${JSON.stringify(rc)}`);

  const reg = await P.unary(cl.naming, 'RegisterInstance', goRegistration(svc, host, port), md);
  assert.equal(code(reg), Code.ExecuteSuccess, `RegisterInstance: ${JSON.stringify(reg)}`);
  const id = sha1(`${NS}##${svc}##${host}##${port}`);
  assert.ok(reg.instance, `RegisterInstance answer carries the instance: ${JSON.stringify(reg)}`);
  assert.equal(unwrap(reg.instance.id), id, 'instance id = sha1(namespace##service##host##port)');

  const hb = await P.unary(
    cl.naming,
    'Heartbeat',
    { namespace: S(NS), service: S(svc), host: S(host), port: S(port), service_token: S(TOKEN) },
    md,
  );
  assert.equal(code(hb), Code.ExecuteSuccess, `Heartbeat without id: ${JSON.stringify(hb)}`);

  const stream = new P.DiscoverStream(cl.naming, md);
  const inst = await discoverUntil(stream, 'INSTANCE lists the registered instance', 'INSTANCE', svc, '', (r) =>
    code(r) === Code.ExecuteSuccess && ids(r).includes(id) ? r : null,
  );
  assert.equal(inst.type, 'INSTANCE');
  assert.equal(unwrap(inst.service.name), svc);
  assert.equal(unwrap(inst.service.namespace), NS);
  const rev = unwrap(inst.service.revision);
  assert.ok(rev, `INSTANCE answer carries a revision: ${JSON.stringify(inst.service)}`);
  const got = inst.instances.find((i) => unwrap(i.id) === id);
  assert.equal(unwrap(got.host), host);
  assert.equal(unwrap(got.port), port);
  assert.equal(unwrap(got.protocol), 'grpc');
  assert.equal(unwrap(got.version), '1.2.3');
  assert.equal(unwrap(got.weight), 100);
  assert.deepEqual(got.metadata, { env: 'interop', lang: 'go' });
  assert.equal(unwrap(got.location.region), 'eu');
  assert.equal(unwrap(got.location.zone), 'eu-west');
  assert.equal(unwrap(got.location.campus), 'dc1');
  assert.equal(got.health_check.type, 'HEARTBEAT');
  assert.equal(unwrap(got.health_check.heartbeat.ttl), 5);

  const routing = await stream.ask(P.discoverRequest('ROUTING', NS, svc, ''));
  assert.equal(code(routing), Code.ExecuteSuccess, `ROUTING: ${JSON.stringify(routing)}`);
  assert.equal(routing.type, 'ROUTING');
  assert.equal(unwrap(routing.service.name), svc);
  const routingRev = unwrap(routing.service.revision);
  assert.ok(routingRev, `ROUTING answer carries a revision: ${JSON.stringify(routing)}`);

  for (const type of ['LANE', 'NEARBY_ROUTE_RULE']) {
    const r = await stream.ask(P.discoverRequest(type, NS, svc, ''));
    assert.equal(code(r), Code.InvalidDiscoverResource, `${type}: ${JSON.stringify(r)}`);
    assert.equal(unwrap(r.service && r.service.name), svc, `${type} answer names the service`);
  }

  /* the SDK's next round: all four at once, with the revisions it holds */
  stream.send(P.discoverRequest('INSTANCE', NS, svc, rev));
  stream.send(P.discoverRequest('ROUTING', NS, svc, routingRev));
  stream.send(P.discoverRequest('LANE', NS, svc, ''));
  stream.send(P.discoverRequest('NEARBY_ROUTE_RULE', NS, svc, ''));
  const round = [];
  for (let i = 0; i < 4; i++) round.push(await stream.next());
  const summary = round.map((r) => `${r.type}:${code(r)}`).sort();
  assert.deepEqual(
    round.filter((r) => code(r) === Code.DataNoChange).map((r) => r.type).sort(),
    ['INSTANCE', 'ROUTING'],
    `unchanged INSTANCE and ROUTING answer DataNoChange (${summary})`,
  );
  assert.equal(round.filter((r) => code(r) === Code.InvalidDiscoverResource).length, 2, `${summary}`);
  for (const r of round) assert.equal(unwrap(r.service && r.service.name), svc, 'every answer names the service');
  for (const r of round.filter((x) => code(x) === Code.DataNoChange)) {
    assert.equal((r.instances || []).length, 0, 'DataNoChange carries no instances');
  }

  const dereg = await P.unary(
    cl.naming,
    'DeregisterInstance',
    { namespace: S(NS), service: S(svc), host: S(host), port: S(port), service_token: S(TOKEN) },
    md,
  );
  assert.equal(code(dereg), Code.ExecuteSuccess, `DeregisterInstance: ${JSON.stringify(dereg)}`);

  const gone = await discoverUntil(stream, 'INSTANCE no longer lists the instance', 'INSTANCE', svc, rev, (r) =>
    code(r) === Code.ExecuteSuccess && !ids(r).includes(id) ? r : null,
  );
  const rev2 = unwrap(gone.service.revision);
  assert.ok(rev2 && rev2 !== rev, `a new revision after deregistration (${rev} -> ${rev2})`);
  const same = await stream.ask(P.discoverRequest('INSTANCE', NS, svc, rev2));
  assert.equal(code(same), Code.DataNoChange, `the new revision is current: ${JSON.stringify(same)}`);

  const status = await stream.close();
  assert.equal(status.code, P.grpc.status.OK, `Discover stream ends OK: ${JSON.stringify(status)}`);
});

test('polaris-cpp flow: register with a client id, heartbeat by id and token, discover with revisions', async () => {
  const svc = uniq('cpp-svc');
  const id = uniq('cpp-instance');
  const reg = await P.unary(cl.naming, 'RegisterInstance', {
    id: S(id),
    namespace: S(NS),
    service: S(svc),
    service_token: S(TOKEN),
    host: S('10.9.8.7'),
    port: S(9090),
    protocol: S('tcp'),
    weight: S(50),
    priority: S(1),
    version: S('v1'),
    metadata: { key1: 'value1' },
    enable_health_check: S(true),
    health_check: { type: 'HEARTBEAT', heartbeat: { ttl: S(5) } },
  });
  assert.equal(code(reg), Code.ExecuteSuccess, `RegisterInstance: ${JSON.stringify(reg)}`);
  assert.equal(unwrap(reg.instance && reg.instance.id), id, 'the client-chosen id is kept');

  const hb = await P.unary(cl.naming, 'Heartbeat', { id: S(id), service_token: S(TOKEN) });
  assert.equal(code(hb), Code.ExecuteSuccess, `Heartbeat with only id and token: ${JSON.stringify(hb)}`);

  const stream = new P.DiscoverStream(cl.naming);
  const inst = await discoverUntil(stream, 'INSTANCE lists the instance', 'INSTANCE', svc, '', (r) =>
    code(r) === Code.ExecuteSuccess && ids(r).includes(id) ? r : null,
  );
  const got = inst.instances.find((i) => unwrap(i.id) === id);
  assert.equal(unwrap(got.host), '10.9.8.7');
  assert.equal(unwrap(got.port), 9090);
  assert.equal(unwrap(got.weight), 50);
  assert.equal(unwrap(got.priority), 1);
  assert.deepEqual(got.metadata, { key1: 'value1' });
  const rev = unwrap(inst.service.revision);
  assert.ok(rev, 'INSTANCE revision');

  const routing = await stream.ask(P.discoverRequest('ROUTING', NS, svc, ''));
  assert.equal(code(routing), Code.ExecuteSuccess, `ROUTING: ${JSON.stringify(routing)}`);
  const routingRev = unwrap(routing.service.revision);
  assert.ok(routingRev, 'ROUTING revision');

  const i2 = await stream.ask(P.discoverRequest('INSTANCE', NS, svc, rev));
  assert.equal(code(i2), Code.DataNoChange, `INSTANCE with the current revision: ${JSON.stringify(i2)}`);
  assert.equal(i2.type, 'INSTANCE');
  const r2 = await stream.ask(P.discoverRequest('ROUTING', NS, svc, routingRev));
  assert.equal(code(r2), Code.DataNoChange, `ROUTING with the current revision: ${JSON.stringify(r2)}`);
  assert.equal(r2.type, 'ROUTING');

  /* a stale revision gets the full answer again */
  const stale = await stream.ask(P.discoverRequest('INSTANCE', NS, svc, 'stale-revision'));
  assert.equal(code(stale), Code.ExecuteSuccess);
  assert.deepEqual(ids(stale), [id]);
  assert.equal(unwrap(stale.service.revision), rev);

  const dereg = await P.unary(cl.naming, 'DeregisterInstance', { id: S(id), service_token: S(TOKEN) });
  assert.equal(code(dereg), Code.ExecuteSuccess, `DeregisterInstance by id: ${JSON.stringify(dereg)}`);
  await discoverUntil(stream, 'INSTANCE no longer lists the instance', 'INSTANCE', svc, rev, (r) =>
    code(r) === Code.ExecuteSuccess && !ids(r).includes(id) ? r : null,
  );
  await stream.close();
});

test('BatchHeartbeat: one response per request on one stream', async () => {
  const svc = uniq('batch-svc');
  const members = [
    { host: '10.2.0.1', port: 7001 },
    { host: '10.2.0.2', port: 7002 },
  ];
  for (const m of members) {
    const reg = await P.unary(cl.naming, 'RegisterInstance', goRegistration(svc, m.host, m.port));
    assert.equal(code(reg), Code.ExecuteSuccess, `RegisterInstance ${m.host}: ${JSON.stringify(reg)}`);
    m.id = unwrap(reg.instance.id);
  }
  const beats = members.map((m) => ({ instanceId: m.id, service: svc, namespace: NS, host: m.host, port: m.port }));

  const call = cl.heartbeat.BatchHeartbeat();
  const answers = [];
  const done = new Promise((resolve, reject) => {
    call.on('data', (m) => answers.push(m));
    call.on('error', reject);
    call.on('status', resolve);
  });
  const ROUNDS = 3;
  for (let i = 0; i < ROUNDS; i++) {
    call.write({ heartbeats: beats });
    await waitFor(`answer to heartbeat round ${i + 1}`, () => answers.length === i + 1, 5000, 10);
  }
  call.end();
  const status = await done;
  assert.equal(status.code, P.grpc.status.OK, `BatchHeartbeat ends OK: ${JSON.stringify(status)}`);
  assert.equal(answers.length, ROUNDS, 'exactly one HeartbeatsResponse per HeartbeatsRequest');

  for (const m of members) {
    const d = await P.unary(cl.naming, 'DeregisterInstance', { id: S(m.id), service_token: S(TOKEN) });
    assert.equal(code(d), Code.ExecuteSuccess);
  }
});

test('error codes a client sees: invalid port, unknown service', async () => {
  const svc = uniq('bad-svc');
  const bad = await P.unary(cl.naming, 'RegisterInstance', goRegistration(svc, '10.3.0.1', 70000));
  assert.equal(code(bad), Code.InvalidInstancePort, `port 70000: ${JSON.stringify(bad)}`);

  const stream = new P.DiscoverStream(cl.naming);
  const unknown = uniq('no-such-svc');
  const r = await stream.ask(P.discoverRequest('INSTANCE', NS, unknown, ''));
  /* Polaris answers NotFoundService or (the open-source server) NotFoundResource;
   * polaris-go treats both as "service not found" */
  assert.ok(
    [Code.NotFoundService, Code.NotFoundResource].includes(code(r)),
    `discover of an unknown service: ${JSON.stringify(r)}`,
  );
  assert.equal(r.type, 'INSTANCE');
  assert.equal(unwrap(r.service && r.service.name), unknown, 'the answer names the service asked for');
  assert.equal((r.instances || []).length, 0);

  /* the failed registration created nothing */
  const r2 = await stream.ask(P.discoverRequest('INSTANCE', NS, svc, ''));
  assert.ok([Code.NotFoundService, Code.NotFoundResource].includes(code(r2)), `after a rejected register: ${JSON.stringify(r2)}`);
  await stream.close();
});
